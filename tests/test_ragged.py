"""RaggedLM: B rows over one padded KV cache with holes match each row decoded alone."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascade.runtime.ragged import RaggedLM
from cascade.runtime.slots import COMPACT_SLACK, compact_slack
from cascade.testing import ARCHS, make_config, sharpen

ATOL = 1e-4


def model(arch: str, attn: str = "sdpa", **cfg):
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(make_config(arch, **cfg), attn_implementation=attn).eval()
    sharpen(m)
    return m


def alone(m, ids: list[int]) -> torch.Tensor:
    """The next-token logits of one row computed from scratch. (V,)"""
    with torch.no_grad():
        return m(input_ids=torch.tensor([ids])).logits[0, -1].float()


def seqs(lengths, seed=0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 200, (n,), generator=g).tolist() for n in lengths]


def step(lm: RaggedLM, rows: list[list[int]], blocks: list[list[int]], keep: list[int]) -> None:
    """Feed each row its block (ragged), then keep `keep[b]` of those tokens: the rest become holes."""
    lm.forward([torch.tensor(b, dtype=torch.long) for b in blocks])
    for r, b, k in zip(rows, blocks, keep):
        r.extend(b[:k])
    lm.rollback([len(r) for r in rows])


def check_next(m, lm: RaggedLM, rows: list[list[int]], last: list[int]) -> None:
    """Each row's logits after feeding its last token equal the row computed alone."""
    logits = lm.forward([torch.tensor([t]) for t in last])[:, -1]  # (B, V)
    for b, (r, t) in enumerate(zip(rows, last)):
        assert torch.allclose(logits[b], alone(m, r + [t]), atol=ATOL), b
        r.append(t)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_ragged_rows_match_each_row_alone(arch, attn):
    m = model(arch, attn)
    rows = seqs([5, 9, 1])  # prompts of different lengths (one with nothing to prefill)
    lm = RaggedLM(m)
    lm.reset(3, 64)
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    assert lm.lengths == [5, 9, 1] and not lm.dense
    for i, keep in enumerate(([1, 4, 2], [3, 0, 4], [2, 2, 1])):  # ragged acceptance, a row keeping nothing
        blocks = seqs([4, 3, 4], seed=10 + i)
        step(lm, rows, blocks, keep)
        assert lm.lengths == [len(r) for r in rows]
    assert lm.holes() > 0
    check_next(m, lm, rows, [7, 8, 9])


@pytest.mark.parametrize("arch", ARCHS)
def test_holes_never_leak_into_attention(arch):
    """Garbage (huge, not zero) in every hole slot changes nothing: holes are masked, not zeroed."""
    m = model(arch)
    rows = seqs([6, 3])
    lm = RaggedLM(m)
    lm.reset(2, 64)
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    step(lm, rows, seqs([4, 4], seed=3), [1, 3])
    holes = ~lm.valid  # (B, S)
    assert holes.any()
    with torch.inference_mode():
        for layer in lm.cache.layers:
            layer.keys[holes[:, None, :].expand(-1, layer.keys.shape[1], -1)] = 1e4
            layer.values[holes[:, None, :].expand(-1, layer.values.shape[1], -1)] = -1e4
    check_next(m, lm, rows, [11, 12])


def test_a_cache_sized_for_its_tokens_compacts_only_when_the_slack_is_used(monkeypatch):
    """Capacity as the engine sizes it (longest prompt + budget + block): holes must not force a compaction every
    step near the end (each one copies the whole cache); the reserve lets them reach the slack first."""
    m = model("gpt2")
    rows = seqs([120, 4])
    lm = RaggedLM(m)
    lm.reset(2, 120 + 12 + 6 + 2)
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    calls = []
    monkeypatch.setattr(lm, "compact", lambda real=lm.compact: (calls.append(lm.width - max(lm.lengths)), real()))
    for i in range(12):  # the long row keeps 1 of 6, the short one all 6: 5 unused slots of width per step
        step(lm, rows, seqs([6, 6], seed=30 + i), [1, 6])
        lm.maybe_compact(incoming=7)
    assert len(calls) == 1 and calls[0] >= compact_slack(lm.width)
    assert compact_slack(64) == COMPACT_SLACK and compact_slack(2048 + 64) == 132
    check_next(m, lm, rows, [7, 8])


@pytest.mark.parametrize("arch", ARCHS)
def test_compaction_and_rows_leaving_keep_every_row_exact(arch):
    m = model(arch)
    rows = seqs([4, 8, 6, 2])
    lm = RaggedLM(m)
    lm.reset(4, 200)
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    for i in range(12):  # rows keep 0..5 of 6: holes pile up until compaction
        step(lm, rows, seqs([6, 6, 6, 6], seed=20 + i), [i % 6, (i + 2) % 6, 0, 5])
        lm.maybe_compact(incoming=7)
    assert lm.width - max(lm.lengths) < COMPACT_SLACK
    lm.compact()
    assert lm.width == max(lm.lengths) and lm.valid.sum(-1).tolist() == lm.lengths
    lm.select([3, 1])  # rows 0 and 2 finished
    rows = [rows[3], rows[1]]
    assert lm.rows == 2
    check_next(m, lm, rows, [5, 6])
    step(lm, rows, seqs([3, 3], seed=99), [2, 1])
    check_next(m, lm, rows, [1, 2])


def test_one_row_is_the_plain_causal_path_and_buffers_are_allocated_once():
    m = model("gpt2")
    lm = RaggedLM(m)
    lm.reset(1, 64)
    row = seqs([7])[0]
    lm.forward([torch.tensor(row[:-1])], last_only=True)
    ptr = lm.cache.layers[0].kbuf.data_ptr()
    for i in range(5):  # draft-like blocks, partly rejected: a crop each time, never a hole
        block = seqs([4], seed=i)[0]
        lm.forward([torch.tensor(block)])
        lm.rollback([lm.length - 4 + i % 3])
        assert lm.dense and lm.width == lm.length
    assert lm.cache.layers[0].kbuf.data_ptr() == ptr  # no re-allocation per step
    assert lm.peak_bytes == lm.cache_bytes() > 0


def test_rolling_forward_is_refused():
    lm = RaggedLM(model("gpt2"))
    lm.reset(2, 16)
    lm.forward([torch.tensor([1, 2]), torch.tensor([3])])
    with pytest.raises(ValueError, match="roll forward"):
        lm.rollback([2, 2])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("runtime", ["lean", "transformers"])
def test_a_tree_block_gives_each_node_the_logits_of_its_own_path(arch, attn, runtime):
    """Two rows, each a tree [root, nodes] (a wide one and a deep one): node i's logits equal its path alone;
    then keeping one path leaves the cache equal to that path (the next token's logits agree)."""
    m = model(arch, attn)
    rows = seqs([6, 3])
    lm = RaggedLM(m, runtime)
    lm.reset(2, 64)
    lm.forward([torch.tensor(r[:-1]) for r in rows], last_only=True)
    trees = [[-1, -1, 0, 2, 1], [-1, 0, 1, 1]]  # parents per node, -1 = the root (the row's last token)
    nodes = seqs([5, 4], seed=5)
    logits = lm.forward([torch.tensor([r[-1], *x]) for r, x in zip(rows, nodes)], trees=trees)  # (B, K, V)
    for b, (r, parents, x) in enumerate(zip(rows, trees, nodes)):
        assert torch.allclose(logits[b, 0], alone(m, r), atol=ATOL)
        for i in range(len(parents)):
            path, node = [], i
            while node >= 0:
                path.insert(0, x[node])
                node = parents[node]
            assert torch.allclose(logits[b, i + 1], alone(m, r + path), atol=ATOL), (b, i)
    kept = [[0, 1, 3], [0, 1, 2]]  # block indices kept: the root and a path (row 0: nodes 0, 2; row 1: nodes 0, 1)
    lm.rollback([len(r) - 1 + len(k) for r, k in zip(rows, kept)], keep=kept)
    for r, k, x in zip(rows, kept, nodes):
        r.extend(x[j - 1] for j in k[1:])
    check_next(m, lm, rows, [7, 8])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("runtime", ["lean", "transformers"])
def test_adopting_a_prefilled_cache_equals_prefilling_and_evicting(arch, runtime):
    m = model(arch)
    rows = seqs([23, 9, 17])
    source = RaggedLM(m, runtime)
    source.reset(3, 64)
    source.forward([torch.tensor(r) for r in rows], last_only=True)  # ragged prompts, left-padded
    full = RaggedLM(m, runtime)
    full.reset(3, 64)
    full.adopt(source, [range(len(r)) for r in rows])  # every token: the same cache as the source's
    assert full.seen == [len(r) for r in rows] and not any(full.evicted)
    sink, window = 2, 5
    sparse, evicting = RaggedLM(m, runtime), RaggedLM(m, runtime)
    sparse.reset(3, 64)
    sparse.adopt(source, [sorted(set(range(sink)) | set(range(len(r) - window, len(r)))) for r in rows])
    evicting.reset(3, 64)
    evicting.forward([torch.tensor(r) for r in rows], last_only=True)
    evicting.evict(sink, window)
    assert sparse.lengths == evicting.lengths == [sink + window] * 3 and sparse.seen == evicting.seen
    last = [[7], [11], [13]]
    a, b, c = (lm.forward([torch.tensor(x) for x in last])[:, -1] for lm in (full, sparse, evicting))
    for i, r in enumerate(rows):
        assert torch.allclose(a[i], alone(m, r + last[i]), atol=ATOL)  # the whole context, at true positions
    assert torch.allclose(b, c, atol=ATOL)  # the sparse view, as if prefilled and evicted
    assert not torch.allclose(b, a, atol=ATOL)  # ... which is not the whole context


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_scores_are_snapkvs_and_leave_the_cache_as_it_was(arch):
    m = model(arch, attn="eager")
    rows, w = seqs([21, 14]), 4
    lm = RaggedLM(m, "lean")
    lm.reset(2, 64)
    lm.forward([torch.tensor(r[:-1]) for r in rows], last_only=True)  # ragged: left-padded
    scores = lm.attention_scores([torch.tensor(r[-w:]) for r in rows], overlap=[w - 1] * 2)
    for b, r in enumerate(rows):
        with torch.no_grad():
            att = m(input_ids=torch.tensor([r]), output_attentions=True).attentions  # layers x (1, H, T, T)
        # the prompt's last w tokens' attention to each earlier token, summed over layers, heads and those queries
        want = torch.stack(att).sum(0)[0, :, -w:, :].sum((0, 1))[: len(r) - w]
        assert scores[b].shape == (len(r) - 1,)
        assert torch.allclose(scores[b][: len(r) - w], want, atol=1e-4), b
        assert torch.all(scores[b][len(r) - w :] == 0)  # the observation window's own cached copies: hidden
    assert lm.lengths == [20, 13]
    check_next(m, lm, [r[:-1] for r in rows], [r[-1] for r in rows])  # the cache is as it was


def test_rows_leaving_in_order_move_up_in_place_and_stay_exact():
    m = model("llama")
    rows = seqs([5, 7, 3, 6])
    lm = RaggedLM(m)
    lm.reset(4, 64)
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    step(lm, rows, seqs([4, 4, 4, 4], seed=40), [1, 4, 0, 2])
    buf = lm.cache.layers[0].kbuf
    lm.select([1, 3])  # rows 0 and 2 finished (the engine's order): no new buffer
    assert lm.cache.layers[0].kbuf.data_ptr() == buf.data_ptr() and lm.cache.layers[0].kbuf.shape[0] == 2
    rows = [rows[1], rows[3]]
    check_next(m, lm, rows, [9, 10])
    step(lm, rows, seqs([3, 3], seed=41), [3, 1])
    check_next(m, lm, rows, [11, 12])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("runtime", ["auto", "transformers"])
def test_rows_joining_a_decoding_batch_match_each_row_alone(arch, runtime):
    """add_rows: new rows join with no slot; their prompt, fed while the others are fed nothing, and every later
    block give each row (old and new) the logits it has alone, through holes, compaction and rows leaving."""
    m = model(arch)
    rows = seqs([5, 3])
    lm = RaggedLM(m, runtime)
    lm.reset(2, 16)  # small: the joining rows grow the buffers
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    step(lm, rows, seqs([4, 4], seed=1), [2, 0])
    lm.add_rows(2)
    assert lm.rows == 4 and lm.lengths[2:] == [0, 0] and not lm.dense
    new = seqs([7, 1], seed=2)
    lm.forward([torch.tensor([], dtype=torch.long)] * 2 + [torch.tensor(r) for r in new], last_only=True)
    rows += new
    assert lm.lengths == [len(r) for r in rows]
    for i in range(6):
        step(lm, rows, seqs([3, 3, 3, 3], seed=30 + i), [i % 4, 3, (i + 1) % 4, 2])
        lm.maybe_compact(incoming=4)
    check_next(m, lm, rows, [5, 6, 7, 8])
    lm.select([2, 0])
    rows = [rows[2], rows[0]]
    check_next(m, lm, rows, [9, 10])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("wider", [False, True])
def test_rows_prefilled_apart_and_absorbed_match_each_row_alone(arch, wider):
    """absorb: newcomers prefilled in a sibling cache join right-aligned; the live rows gain holes only when the
    newcomers' cache is the wider one; every row keeps its own logits."""
    m = model(arch)
    rows = seqs([6, 4])
    lm = RaggedLM(m)
    lm.reset(2, 16)
    lm.forward([torch.tensor(r) for r in rows], last_only=True)
    step(lm, rows, seqs([3, 3], seed=3), [3, 1])
    width = lm.width
    new = seqs([30, 5] if wider else [4, 2], seed=4)
    joining = lm.sibling(2, 40)
    joining.forward([torch.tensor(r) for r in new], last_only=True)
    lm.absorb(joining)
    rows += new
    assert lm.rows == 4 and lm.lengths == [len(r) for r in rows] and lm.valid.sum(-1).tolist() == lm.lengths
    assert lm.width == (30 if wider else width)
    for i in range(4):
        step(lm, rows, seqs([2, 2, 2, 2], seed=40 + i), [1, 2, 0, 2])
    check_next(m, lm, rows, [1, 2, 3, 4])
