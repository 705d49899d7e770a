"""The ``selfgen`` command line: ``list``, ``train``, ``generate``, ``eval``, ``demo``.

    selfgen list
    selfgen train ddpm --config configs/ddpm_digits.yaml --max_train_steps 200
    selfgen train ddpm --config configs/ddpm_digits.yaml --data my_images/ --pretrained assets/ddpm-digits --lora_rank 8
    selfgen generate ddpm --model assets/ddpm-digits --output outputs/samples --num_samples 16
    selfgen eval ddpm --model assets/ddpm-digits --output outputs/eval
    selfgen demo [--only ddpm]

Methods are found by :func:`selfgen.train.registry.discover_methods`; ``--key value`` pairs after
the known flags override the config (train) or are passed as options (generate).
``selfgen train <method> --help`` lists the method's config fields.

Bad input (a config value, a YAML file, a model folder, a busy ``output_dir``) ends the command with
one line, ``error: ...``, and exit status 2; ``SELFGEN_DEBUG=1`` shows the traceback instead. Heavy
libraries (torch, diffusers) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

USER_ERRORS = (ValueError, OSError, FloatingPointError)  # what a user's input can cause: one line each


def default_assets_dir() -> Path:
    """``$SELFGEN_ASSETS``, else the repository's ``assets/`` (editable installs), else ``./assets``."""
    if os.environ.get("SELFGEN_ASSETS"):
        return Path(os.environ["SELFGEN_ASSETS"])
    import selfgen

    repository_assets = Path(selfgen.__file__).resolve().parents[1] / "assets"
    return repository_assets if repository_assets.is_dir() else Path("assets")


def checkpoint_class(folder: Path) -> str | None:
    """The class a saved folder holds: a diffusers pipeline (``model_index.json``) or a transformers
    model (``config.json`` with ``architectures``); ``None`` if it is neither. A damaged index file
    is a ``ValueError`` naming it."""
    for name, key in (("model_index.json", "_class_name"), ("config.json", "architectures")):
        path = folder / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text()).get(key)
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{path} is not a valid JSON object ({error}): the folder is damaged or truncated") from None
        if isinstance(value, list):  # ["module", "ClassName"] (diffusers) or a list of architectures
            value = value[-1] if key == "_class_name" else value[0] if value else None
        return value if key == "architectures" else value or "?"
    return None


def check_model_folder(folder: Path) -> None:
    """``--model`` must be a saved pipeline or transformers model folder: one error line otherwise."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--model {folder}: {'is a file, not' if folder.exists() else 'no such'} folder")
    if checkpoint_class(folder) is None:
        what = "is empty" if not any(folder.iterdir()) else "has no model_index.json (pipeline) or config.json (model)"
        raise FileNotFoundError(f"--model {folder} {what}: not a saved model folder (selfgen train writes one)")


def bundled_checkpoints(assets_dir: Path) -> list[tuple[str, str]]:
    """``(folder name, class)`` of every saved pipeline or transformers model under ``assets_dir``."""
    found = []
    for folder in sorted(path for path in assets_dir.glob("*") if path.is_dir()):
        class_name = checkpoint_class(folder)
        if class_name is not None:
            found.append((folder.name, class_name))
    return found


def _methods():
    from selfgen.train.registry import discover_methods

    return discover_methods()


def _get_method(name: str):
    methods = _methods()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(methods)}")
    return methods[name]


def command_list(args: argparse.Namespace) -> None:
    methods = _methods()
    print("methods:")
    for method in methods.values():
        print(f"  {method.name:<16} {method.summary}")
    print(f"bundled checkpoints ({args.assets}):")
    checkpoints = bundled_checkpoints(args.assets)
    for folder, class_name in checkpoints:
        print(f"  {folder:<24} {class_name}")
    if not checkpoints:
        print("  (none found; pass --assets DIR or set SELFGEN_ASSETS)")


def command_train(args: argparse.Namespace, extra: list[str]) -> None:
    from selfgen.train.config import load_config, parse_overrides

    method = _get_method(args.method)
    overrides = parse_overrides(extra)
    for key in ("pretrained", "data"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = load_config(method.config_class, args.config, overrides)
    result = method.train(config)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    if getattr(result, "already_finished", False):
        print(f"{config.output_dir} was already trained to step {result.global_step} (max_train_steps): "
              f"nothing to train; final logged loss {result.final_loss:.4f}")
    else:
        print(f"trained {method.name} for {result.global_step} steps; final loss {result.final_loss:.4f}")
    print(f"pipeline saved to {result.pipeline_dir}")


def command_run_model(args: argparse.Namespace, extra: list[str]) -> None:
    """``selfgen generate|eval <method> --model PATH --output DIR [--option value ...]``."""
    from selfgen.train.config import bind_options, parse_overrides

    import numpy as np

    method = _get_method(args.method)
    function = method.generate if args.command == "generate" else method.evaluate
    if function is None:
        raise ValueError(f"method {method.name!r} has no {args.command} command")
    options = bind_options(function, parse_overrides(extra), reserved=("model_path", "output_dir"))
    check_model_folder(Path(args.model))
    result = function(args.model, Path(args.output), **options)
    printable = {key: value for key, value in result.items() if not isinstance(value, np.ndarray)}
    if args.command == "eval":
        write_metrics(printable, Path(args.output))
    print(json.dumps(printable, indent=2, default=str))


def write_metrics(metrics: dict, output_dir: Path) -> None:
    """``output_dir/metrics.json``: what a method's ``evaluate``/``demo`` returned (methods never write it)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


def command_demo(args: argparse.Namespace) -> None:
    methods = {name: method for name, method in _methods().items() if method.demo is not None}
    if args.only is not None:
        if args.only not in methods:
            raise ValueError(f"no demo for {args.only!r}; methods with demos: {', '.join(methods)}")
        methods = {args.only: methods[args.only]}
    from selfgen.demo import run_demos

    run_demos(methods, args.assets, Path(args.output))


class MethodFieldsHelp(argparse.Action):
    """``--help`` of ``selfgen train``: after a method name, also that method's config fields."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show this help; after a method name, also the method's config fields")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.print_help()
        if getattr(namespace, "method", None):
            from selfgen.train.config import format_fields

            try:
                print(f"\n{format_fields(_get_method(namespace.method).config_class)}")
            except ValueError as error:
                parser.exit(2, f"error: {error}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfgen", description="Self-improving generative models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    assets_help = "folder of bundled checkpoints (default: $SELFGEN_ASSETS or the repository's assets/)"

    listing = subparsers.add_parser("list", help="methods and bundled checkpoints")
    listing.add_argument("--assets", type=Path, default=None, help=assets_help)

    train = subparsers.add_parser(
        "train", help="train a method; extra --key value pairs override the config", add_help=False,
        epilog="any TrainingConfig or method config field can be overridden, e.g. --max_train_steps 200; "
        "`selfgen train <method> --help` lists them",
    )
    train.add_argument("-h", "--help", action=MethodFieldsHelp)
    train.add_argument("method")
    train.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    train.add_argument("--pretrained", default=None, help="fine-tune from this saved pipeline folder")
    train.add_argument("--data", default=None, help="your own data (folder or file; the method says which)")

    for name, help_text in (("generate", "sample from a saved pipeline"), ("eval", "evaluate a saved pipeline")):
        runner = subparsers.add_parser(name, help=f"{help_text}; extra --key value pairs are options")
        runner.add_argument("method")
        runner.add_argument("--model", required=True, help="saved pipeline folder")
        runner.add_argument("--output", default=f"outputs/{name}", help="where to write results")

    demo = subparsers.add_parser("demo", help="run every bundled checkpoint and write results to outputs/demo")
    demo.add_argument("--only", default=None, help="run one method's demo")
    demo.add_argument("--output", default="outputs/demo")
    demo.add_argument("--assets", type=Path, default=None, help=assets_help)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a command; a user error ends it with ``error: <one line>`` and exit status 2."""
    try:
        run(argv)
    except USER_ERRORS as error:
        if os.environ.get("SELFGEN_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def run(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("selfgen").setLevel(logging.INFO)  # resumes, exports and skipped checkpoints are news
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("list", "demo"):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.assets = args.assets or default_assets_dir()
        (command_list if args.command == "list" else command_demo)(args)
    elif args.command == "train":
        command_train(args, extra)
    else:
        command_run_model(args, extra)


if __name__ == "__main__":
    main(sys.argv[1:])
