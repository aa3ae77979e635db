"""physvid.stream.RenderStream: rendering in DataLoader workers, split over workers and DDP ranks (issue 21)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from physvid import RenderConfig, ShapeConfig, render  # noqa: E402
from physvid.errors import ConfigError  # noqa: E402
from physvid.stream import RenderStream, stream_blocks  # noqa: E402

TINY = RenderConfig(property="mixed", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 2)),
                    property_maps=True)


@pytest.mark.parametrize("n, block", [(1, 4), (37, 4), (64, 16), (100, 7)])
def test_blocks_cover_every_index_once_for_any_ranks_and_workers(n, block):
    for world in (1, 2, 3):
        for workers in (1, 2, 4):
            got = [i for r in range(world) for w in range(workers)
                   for a, b in stream_blocks(5, n, block, r, world, w, workers) for i in range(a, b)]
            assert sorted(got) == list(range(5, 5 + n)), (world, workers)  # no overlap, no gap


def test_drop_last_gives_every_rank_the_same_number_of_whole_blocks():
    counts = [len(stream_blocks(0, 100, 8, r, 3, 0, 1, drop_last=True)) for r in range(3)]
    assert counts == [4, 4, 4]  # 12 whole blocks of 8; the 13th (partial) one and none else dropped
    got = sorted(i for r in range(3) for a, b in stream_blocks(0, 100, 8, r, 3, 0, 1, True) for i in range(a, b))
    assert got == list(range(96))


def test_loader_with_workers_delivers_the_renderer_s_sequences_once_each():
    stream = RenderStream(TINY, 22, first_index=3, block=4, fields=("property_map", "vx"))
    loader = torch.utils.data.DataLoader(stream, batch_size=5, num_workers=2, multiprocessing_context="fork")
    items = {}
    for batch in loader:
        for r, i in enumerate(batch["index"].tolist()):
            assert i not in items
            items[i] = (batch["video"][r], batch["property_map"][r], batch["vx"][r])
    assert sorted(items) == list(range(3, 25)) and len(stream) == 22
    video, params = render(TINY, range(3, 25))
    for k, i in enumerate(range(3, 25)):  # deterministic by (seed, index): the very sequence generate writes
        assert torch.equal(items[i][0], torch.from_numpy(video[k]))
        assert torch.equal(items[i][1], torch.from_numpy(params["property_map"][k]))
        np.testing.assert_array_equal(items[i][2].numpy(), params["vx"][k])


def test_batched_stream_over_two_ranks_in_order_with_fresh_epochs():
    seen = []
    for rank in range(2):
        s = RenderStream(TINY, 24, batch_size=4, rank=rank, world_size=2, fresh=True)
        s.set_epoch(1)
        loader = torch.utils.data.DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context="fork")
        batches = [b["index"].tolist() for b in loader]
        assert len(batches) == len(s) == 3 and all(len(b) == 4 for b in batches)
        assert batches == sorted(batches)  # a rank's batches arrive in index order
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(24, 48))  # epoch 1 of a fresh stream: the next 24 indices


def test_bad_fields_and_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="masks=True"):
        RenderStream(TINY, 4, fields=("masks",))
    with pytest.raises(ConfigError, match="unknown field 'speed'"):
        RenderStream(TINY, 4, fields=("speed",))
    with pytest.raises(ConfigError, match="n must be an integer >= 1"):
        RenderStream(TINY, 0)
