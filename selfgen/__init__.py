"""selfgen: self-improving generative models on diffusers, transformers and accelerate.

The package's parts live in top-level folders mapped into this namespace (``selfgen.models``,
``selfgen.pipelines``, ``selfgen.train``, ``selfgen.data``, ``selfgen.eval``); this root re-exports
the public classes, so ``from selfgen import XPipeline`` works and diffusers can load components
saved as ``["selfgen", "ClassName"]`` in ``model_index.json``.
"""

__version__ = "0.1.0"

from selfgen.models.attention import ATTENTION_BACKENDS, Attention, AttentionBackendMixin, attention
from selfgen.pipelines.pipeline_utils import SelfgenPipeline
from selfgen.pipelines.unconditional import UnconditionalDiffusionPipeline

from .auto import AutoPipeline

__all__ = [
    "ATTENTION_BACKENDS",
    "Attention",
    "AttentionBackendMixin",
    "AutoPipeline",
    "SelfgenPipeline",
    "UnconditionalDiffusionPipeline",
    "attention",
]
