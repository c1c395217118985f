"""The renderer: closed-form line lengths equal the rendered templates; line selection and bucketing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sos_jax.search import countdown_render as render
from sos_jax.tokenizers import countdown as tok

render_lines = jax.jit(render.render_lines, static_argnums=4)
render_batch = jax.jit(render.render_batch, static_argnums=4, static_argnames=("min_width", "chunks"))
KINDS = [render.CURRENT_STATE, render.EXPLORE, render.GENERATED, render.LEAF, render.MOVE, render.NO_SOLUTION,
         render.OT_GENERATED]


def random_nodes(key, n_nodes, m, d):
    """Node tables with random counts, depths and numbers of 1 to 10 digits."""
    ks = jax.random.split(key, 8)
    digits = jax.random.randint(ks[0], (n_nodes, m + 4 * d), 0, 10)
    values = (jax.random.randint(ks[1], digits.shape, 0, 2**31 - 1) % (10 ** jnp.minimum(digits + 1, 9)))
    count = jax.random.randint(ks[2], (n_nodes,), 1, m + 1)
    return render.NodeTable(
        nums=values[:, :m], count=count, depth=m - count,
        x=values[:, m : m + d], op=jax.random.randint(ks[3], (n_nodes, d), 0, 4), y=values[:, m + d : m + 2 * d],
        value=values[:, m + 2 * d : m + 3 * d], ids=jax.random.randint(ks[4], (n_nodes, d), 0, 60),
    )


@pytest.mark.parametrize("m", [3, 4, 6])
def test_closed_form_lengths_equal_rendered_lines(m):
    d = m - 1
    nodes = random_nodes(jax.random.key(m), 64, m, d)
    target = jnp.int32(987)
    lengths = render.kind_lengths(nodes, target)

    @jax.jit
    def lines_of_kind(kind):
        one = lambda node: render.render_lines(jnp.full((1, 1), kind), jnp.full((1, 1), node), nodes, target, 512)
        return jax.vmap(one)(jnp.arange(64))

    for kind in KINDS:
        tokens, written = lines_of_kind(kind)
        np.testing.assert_array_equal(written, lengths[:, kind], err_msg=f"kind {kind}")
        for row, n in zip(np.asarray(tokens)[:4], np.asarray(written)[:4]):
            text = tok.decode(row[:n])
            assert tok.encode(text) == row[:n].tolist()


def test_slots_render_in_order_skipping_none():
    nodes = random_nodes(jax.random.key(0), 8, 4, 3)
    kinds = jnp.array([[render.NONE, render.MOVE], [render.NONE, render.NONE], [render.LEAF, render.MOVE]])
    refs = jnp.array([[0, 1], [0, 0], [2, 3]])
    tokens, written = render_lines(kinds, refs, nodes, jnp.int32(50), 256)
    parts = [render_lines(jnp.array([[k]]), jnp.array([[r]]), nodes, jnp.int32(50), 256)
             for k, r in ((render.MOVE, 1), (render.LEAF, 2), (render.MOVE, 3))]
    expected = np.concatenate([np.asarray(t)[:n] for t, n in parts])
    assert int(written) == len(expected)
    np.testing.assert_array_equal(np.asarray(tokens)[: len(expected)], expected)
    assert int(render.trace_length(kinds, refs, nodes, jnp.int32(50))) == len(expected)


def test_render_batch_is_independent_of_bucketing():
    nodes = random_nodes(jax.random.key(1), 40, 4, 3)
    batch = 12
    kinds = jax.random.choice(jax.random.key(2), jnp.array(KINDS + [render.NONE]), (batch, 10, 3))
    refs = jax.random.randint(jax.random.key(3), (batch, 10, 3), 0, 40)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), nodes)
    targets = jnp.full((batch,), 77)
    one = render_batch(kinds, refs, stacked, targets, 512, min_width=512, chunks=1)
    many = render_batch(kinds, refs, stacked, targets, 512, min_width=64, chunks=5)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
    assert (np.asarray(one[1]) <= 512).all() and (np.asarray(one[1]) == np.minimum(one[2], 512)).all()
