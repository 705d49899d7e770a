"""The SPIRAL text games: rules, illegal moves, outcomes, the fixed opponents and the text protocol."""

import pytest

from selfgen.data.games import (
    GAMES,
    HELD_OUT_SEED,
    KuhnPoker,
    MinimaxPlayer,
    Negotiation,
    RandomPlayer,
    TicTacToe,
    new_game,
    parse_move,
    play_game,
    random_play_transcripts,
)
from selfgen.train.llm.modeling import ALPHABET


def test_tictactoe_moves_observation_and_win():
    game = TicTacToe()
    for move in ("1", "4", "2", "5"):
        assert game.apply(move)
    assert game.observation() == "G:ttt\nY:x\nB:xx.,oo.,...\nL:3,6,7,8,9\n"
    assert game.apply("3") and game.done
    assert game.winner() == 0 and game.returns() == (1.0, -1.0)


def test_tictactoe_full_board_is_a_draw():
    game = TicTacToe()
    for move in ("1", "2", "3", "5", "4", "6", "8", "7", "9"):
        game.apply(move)
    assert game.done and game.winner() is None and game.returns() == (0.0, 0.0)


@pytest.mark.parametrize("move", ["1", "10", "", "x", "M:2"])
def test_an_illegal_move_ends_the_game_as_a_loss(move):
    game = TicTacToe()
    game.apply("1")
    assert game.apply(move) is False
    assert game.done and game.illegal_player == 1 and game.winner() == 0 and game.returns() == (1.0, -1.0)
    with pytest.raises(ValueError, match="game is over"):
        game.apply("2")


def test_kuhn_poker_payoffs():
    cases = {
        ("check", "check"): (1, -1),  # showdown for the antes, K beats Q
        ("bet", "call"): (2, -2),
        ("bet", "fold"): (1, -1),
        ("check", "bet", "fold"): (-1, 1),
        ("check", "bet", "call"): (2, -2),
    }
    for history, chips in cases.items():
        game = KuhnPoker(("K", "Q"))
        for move in history:
            assert game.apply(move)
        assert game.done and game.chips() == chips and game.returns() == chips
        assert game.winner() == (0 if chips[0] > 0 else 1)
    game = KuhnPoker(("J", "K"))
    game.apply("bet")
    assert game.legal_moves() == ["call", "fold"] and game.observation() == "G:kuhn\nY:1\nC:3\nT:bet\nL:call,fold\n"
    assert KuhnPoker(("Q", "J"), card_text="letter").observation() == "G:kuhn\nY:0\nC:Q\nT:\nL:check,bet\n"
    assert new_game("kuhn", 1, card_text="letter").cards == new_game("kuhn", 1).cards
    with pytest.raises(ValueError, match="card_text"):
        KuhnPoker(card_text="face")
    assert not game.apply("check") and game.winner() == 0 and game.returns() == (1.0, -1.0)


def test_negotiation_deal_shares_and_no_deal():
    game = Negotiation(counts=(2, 1, 1), values=((0, 4, 0), (3, 0, 2)), max_turns=4)
    assert "accept" not in game.legal_moves() and len(game.legal_moves()) == 3 * 2 * 2
    assert game.apply("0,1,0")  # player 0 keeps the hat, offers 2 books + 1 ball
    assert game.observation() == "G:deal\nY:1\nI:2,1,1\nV:3,0,2\nO:2,0,1\nN:3\n"
    assert game.apply("accept") and game.done
    assert game.scores() == (1.0, 1.0) and game.winner() is None  # both get all they value
    unequal = Negotiation(counts=(2, 1, 1), values=((0, 4, 0), (3, 0, 2)))
    unequal.apply("1,1,0")
    unequal.apply("accept")
    assert unequal.scores() == (1.0, 0.625) and unequal.winner() == 0
    no_deal = Negotiation(counts=(1, 1, 1), values=((1, 1, 1), (1, 1, 1)), max_turns=2)
    no_deal.apply("1,1,1")
    no_deal.apply("0,0,0")
    assert no_deal.done and no_deal.winner() is None
    assert not Negotiation().apply("2,0,0")  # more books than there are


def test_minimax_never_loses_to_random_and_draws_itself():
    for seed in range(12):
        seat = seed % 2
        players = [RandomPlayer(seed), RandomPlayer(seed)]
        players[seat] = MinimaxPlayer(seed)
        game = TicTacToe()
        play_game(game, players)
        assert game.winner() in (seat, None)
    game = TicTacToe()
    play_game(game, [MinimaxPlayer(0), MinimaxPlayer(1)])
    assert game.winner() is None
    with pytest.raises(ValueError, match="tictactoe only"):
        MinimaxPlayer()(KuhnPoker())


def test_games_are_seeded_and_the_protocol_fits_the_tiny_tokenizer():
    assert new_game("negotiation", 3) == new_game("negotiation", 3)
    assert new_game("kuhn", 1).cards == new_game("kuhn", 1).cards
    for name in GAMES:
        pairs = random_play_transcripts(name, 20, first_seed=0)
        assert pairs and all(set(obs + "M:" + move) <= set(ALPHABET) for obs, move in pairs)
        assert all(obs.startswith("G:") and obs.endswith("\n") for obs, _ in pairs)


def test_parse_move_and_errors():
    assert parse_move("M:5") == "5" and parse_move("M: bet \nM:fold") == "bet" and parse_move("S:1+2=3") == ""
    with pytest.raises(ValueError, match="game must be one of"):
        new_game("chess", 0)
    with pytest.raises(ValueError, match="held-out"):
        random_play_transcripts("kuhn", 10, first_seed=HELD_OUT_SEED - 5)
    with pytest.raises(ValueError, match="not finished"):
        TicTacToe().winner()
