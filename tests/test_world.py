import itertools

import jax
import numpy as np

from engine.core.world import ARROWS, all_sequences, reference_q_star, render, transition_term
from engine.core.world import REFERENCE_WORLD as WORLD


def test_sequences_are_lexicographic_with_position_zero_slowest():
    x = all_sequences(WORLD)
    assert x.shape == (4096, 4)
    assert x[0].tolist() == [0, 0, 0, 0] and x[1].tolist() == [0, 0, 0, 1] and x[-1].tolist() == [7, 7, 7, 7]
    assert x.tolist() == [list(t) for t in itertools.product(range(8), repeat=4)]


def test_q_star_is_the_reference_recipe_bit_for_bit():
    key_pos, key_tok, key_pair = jax.random.split(jax.random.PRNGKey(42), 3)
    w_pos = np.asarray(jax.random.normal(key_pos, (4,)))
    w_tok = np.asarray(jax.random.normal(key_tok, (8,)))
    w_pair = np.asarray(0.3 * jax.random.normal(key_pair, (4, 8)))
    expected = np.array(
        [
            sum(np.float32(w_pos[i] * w_tok[t]) for i, t in enumerate(x)) + sum(w_pair[i, t] for i, t in enumerate(x))
            for x in all_sequences(WORLD)
        ],
        np.float32,
    )
    q = np.asarray(reference_q_star(WORLD))
    np.testing.assert_allclose(q, expected, rtol=0, atol=2e-6)
    assert q.dtype == np.float32


def test_q_star_published_facts():
    q = np.asarray(reference_q_star(WORLD))
    assert render(all_sequences(WORLD)[q.argmax()]) == "↗ ↓ ↑ ↗"
    assert round(float(q.max()), 3) == 3.266
    assert round(float(q.min()), 3) == -4.216
    assert round(float(q.mean()), 3) == -0.724
    assert round(float(q.std()), 3) == 1.312


def test_reference_q_star_is_additive_and_transition_term_is_not():
    x = all_sequences(WORLD)

    def interaction(values):
        # additive <=> q(a,b,..) - q(a',b,..) independent of the other positions
        table = np.asarray(values).reshape(8, 8, 8, 8)
        return np.abs(table[1, :, 0, 0] - table[0, :, 0, 0] - (table[1, 0, 0, 0] - table[0, 0, 0, 0])).max()

    assert interaction(reference_q_star(WORLD)) < 1e-5
    assert interaction(transition_term(WORLD)) > 0.1
    assert x.shape[0] == 4096


def test_render_uses_compass_arrows():
    assert ARROWS[0] == "↑" and len(ARROWS) == 8
    assert render([0, 2, 4, 6]) == "↑ → ↓ ←"
