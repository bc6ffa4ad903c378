"""The batching engine through its own interface: a Step that records what it is given, no model."""

import threading

import pytest
import torch
from PIL import Image

from qinsight_sdk.errors import ImageInputError, UsageError
from qinsight_sdk.io.images import PATCH_GRID_GEOMETRY
from qinsight_sdk.judging.batching import WINDOW_BATCHES, BatchRunner, Failure, Request, Step


def square(side):
    """An input that loads as a side x side image: 28 pixels per side is one image token per 28x28."""
    return ("square", side)


def load(source):
    if source == "unreadable":
        raise ImageInputError("image 'unreadable' is not a recognised image")
    return Image.new("RGB", (source[1], source[1]))


class Recorder:
    """A Step whose output for a request is its first image's side; records the batches it ran."""

    def __init__(self, fits=None, broken=(), broken_prepare=()):
        self.fits, self.broken, self.broken_prepare = fits, set(broken), set(broken_prepare)
        self.batches = []

    def prepare(self, requests):
        sides = [r.images[0].width for r in requests]
        if self.broken_prepare & set(sides):
            raise ValueError(f"cannot encode {sorted(self.broken_prepare & set(sides))}")
        return sides

    def execute(self, sides):
        if self.fits is not None and len(sides) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.broken & set(sides):
            raise RuntimeError("the kernel failed")
        self.batches.append(list(sides))
        return [f"side {s}" for s in sides]

    def step(self):
        return Step(self.prepare, self.execute)


def requests(*sources):
    return [Request([{"role": "user", "content": "q"}], [s]) for s in sources]


def run(runner, recorder, items, batch_size):
    finished = []
    results = runner.run(items, batch_size, recorder.step(), lambda i, o: finished.append((i, o)) or o)
    return results, finished


def test_outputs_come_back_in_input_order_as_they_finish():
    recorder = Recorder()
    results, finished = run(BatchRunner(load, 16384), recorder, requests(*(square(28 * k) for k in (3, 1, 2, 1))), 2)
    assert results == ["side 84", "side 28", "side 56", "side 28"]
    assert [i for i, _ in finished] == [0, 1, 2, 3]


def test_batches_hold_similar_sizes_within_the_batch_size():
    recorder = Recorder()
    run(BatchRunner(load, 16384), recorder, requests(*(square(28 * k) for k in (3, 1, 2, 1, 3))), 2)
    assert recorder.batches == [[28, 28], [56, 84], [84]]


def test_padded_tokens_bound_a_batch_inclusively():
    recorder = Recorder()  # each image is 4 tokens: two pad to 8, three to 12
    run(BatchRunner(load, max_batch_tokens=8), recorder, requests(*[square(56)] * 5), 8)
    assert recorder.batches == [[56, 56], [56, 56], [56]]


def test_images_are_read_a_window_at_a_time():
    recorder = Recorder()
    sides = [28 * (10 - k) for k in range(2 * WINDOW_BATCHES + 1)]  # decreasing: sorting would reverse them all
    run(BatchRunner(load, 16384), recorder, requests(*map(square, sides)), 1)
    window = sides[:WINDOW_BATCHES]
    assert [b[0] for b in recorder.batches[:WINDOW_BATCHES]] == sorted(window)


def test_an_unreadable_input_is_a_failure_of_its_own():
    recorder = Recorder()
    results, _ = run(BatchRunner(load, 16384), recorder, requests(square(28), "unreadable", square(56)), 8)
    assert results[0] == "side 28" and results[2] == "side 56"
    assert results[1] == Failure("image 'unreadable' is not a recognised image")
    assert recorder.batches == [[28, 56]]


def test_a_model_failure_is_retried_request_by_request():
    recorder = Recorder(broken={56})
    results, _ = run(BatchRunner(load, 16384), recorder, requests(square(28), square(56), square(84)), 8)
    assert results[0] == "side 28" and results[2] == "side 84"
    assert results[1] == Failure("the model failed on this input: RuntimeError: the kernel failed")
    assert recorder.batches == [[28], [84]]


def test_a_failure_while_preparing_is_retried_request_by_request():
    recorder = Recorder(broken_prepare={56})
    results, _ = run(BatchRunner(load, 16384), recorder, requests(square(28), square(56), square(84)), 8)
    assert results[1] == Failure("the model failed on this input: ValueError: cannot encode [56]")
    assert results[0] == "side 28" and results[2] == "side 84"


def test_out_of_memory_halves_the_batch_and_later_runs_keep_the_size_that_fitted():
    runner, recorder = BatchRunner(load, 16384), Recorder(fits=2)
    results, _ = run(runner, recorder, requests(*[square(28)] * 5), 8)
    assert results == ["side 28"] * 5 and runner.memory_cap == 1  # 5 -> 2 + 3 -> 2 + (1 + 2): the last halving
    assert recorder.batches == [[28, 28], [28], [28, 28]]
    runner, recorder = BatchRunner(load, 16384), Recorder(fits=2)
    run(runner, recorder, requests(*[square(28)] * 4), 8)
    assert runner.memory_cap == 2 and recorder.batches == [[28, 28], [28, 28]]
    recorder.batches.clear()
    run(runner, recorder, requests(*[square(28)] * 6), 8)
    assert recorder.batches == [[28, 28]] * 3  # planned at the size that fitted: never refused again


def test_out_of_memory_with_a_single_request_is_its_failure():
    results, _ = run(BatchRunner(load, 16384), Recorder(fits=0), requests(square(28)), 8)
    assert isinstance(results[0], Failure)
    assert results[0].message.startswith("out of memory even alone (CUDA out of memory.")
    assert results[0].message.endswith(
        "; use the fast image size (--max-pixels fast, ImageBounds.fast()) or a larger device"
    )  # issue 11: the official size can be too big alone


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_at_least_one(batch_size):
    with pytest.raises(UsageError, match=f"batch_size must be at least 1, got {batch_size}"):
        BatchRunner(load, 16384).run(requests(square(28)), batch_size, Recorder().step(), lambda i, o: o)


def test_decoded_pixels_are_dropped_after_their_batch():
    items = requests(square(28), square(56))
    run(BatchRunner(load, 16384), Recorder(), items, 1)
    assert all(r.images is None for r in items)


def test_image_tokens_count_merged_patches():
    assert PATCH_GRID_GEOMETRY.tokens(56, 84) == 2 * 3 and PATCH_GRID_GEOMETRY.tokens(28, 28) == 1


def test_a_geometry_s_token_count_decides_the_batches():
    """A family whose images all cost the same (RALI) packs them by count, whatever their sizes."""
    recorder = Recorder()
    run(
        BatchRunner(load, max_batch_tokens=3, cost=lambda image: 1),
        recorder,
        requests(square(280), square(28), square(560), square(56)),
        8,
    )
    assert [len(b) for b in recorder.batches] == [3, 1]


@pytest.mark.parametrize("overlap", [True, False])
def test_batches_are_prepared_in_a_helper_thread_only_when_asked_and_give_the_same_results(overlap):
    threads = []

    class Where(Recorder):
        def prepare(self, requests):
            threads.append(threading.current_thread().name)
            return super().prepare(requests)

    recorder = Where()
    results, _ = run(
        BatchRunner(load, 16384, overlap=lambda: overlap), recorder, requests(*(square(28 * k) for k in (3, 1, 2))), 1
    )
    assert results == ["side 84", "side 28", "side 56"]
    assert len(threads) == 3
    assert all(name.startswith("qinsight-prepare") for name in threads) == overlap
    assert all(name == threading.current_thread().name for name in threads) == (not overlap)
