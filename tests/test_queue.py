"""The per-class FIFO cache, with contents worked out by hand."""

from __future__ import annotations

import torch

from icckd_cli.methods.queue import ClassQueue

# 2-D inputs of various lengths; after normalisation they are the unit vectors below
A, B, C, D, E = [3.0, 0.0], [0.0, 0.5], [-2.0, 0.0], [0.0, -1.0], [1.0, 1.0]
UA, UB, UC, UD = [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]
UE = [2**-0.5, 2**-0.5]


def push(q: ClassQueue, rows: list[list[float]], labels: list[int]) -> None:
    q.push(torch.tensor(rows), torch.tensor(labels))


def check(q: ClassQueue, rows: list[list[float]], labels: list[int]) -> None:
    z, y = q.contents()
    torch.testing.assert_close(z, torch.tensor(rows).reshape(-1, q.dim))
    assert y.tolist() == labels


def test_fifo_keeps_last_two_of_three() -> None:
    q = ClassQueue(3, 2, 2)
    check(q, [], [])
    push(q, [A], [1])
    check(q, [UA], [1])
    push(q, [B], [1])
    push(q, [C], [1])  # overwrites A, the oldest
    check(q, [UB, UC], [1, 1])


def test_several_classes_in_one_push() -> None:
    q = ClassQueue(3, 2, 2)
    push(q, [A, B, C, D], [2, 0, 2, 0])
    # grouped by class, oldest first within a class
    check(q, [UB, UD, UA, UC], [0, 0, 2, 2])
    push(q, [E], [0])
    check(q, [UD, UE, UA, UC], [0, 0, 2, 2])


def test_wraparound_across_pushes() -> None:
    q = ClassQueue(1, 3, 2)
    push(q, [A, B], [0, 0])
    push(q, [C, D], [0, 0])  # D lands in slot 0 in place of A
    check(q, [UB, UC, UD], [0, 0, 0])
    push(q, [E, A], [0, 0])
    check(q, [UD, UE, UA], [0, 0, 0])


def test_over_full_push_keeps_last_k_in_order() -> None:
    q = ClassQueue(2, 2, 2)
    push(q, [A], [1])
    push(q, [B, C, E, D, A], [1, 1, 0, 1, 1])  # class 1 gets four: only D, A survive
    check(q, [UE, UD, UA], [0, 1, 1])
    push(q, [B], [1])
    check(q, [UE, UA, UB], [0, 1, 1])


def test_memory_constant_after_many_pushes() -> None:
    g = torch.Generator().manual_seed(0)
    q = ClassQueue(5, 4, 3)
    before = {k: (v.shape, v.data_ptr()) for k, v in q.state_dict().items()}
    assert sum(v.numel() for v in q.state_dict().values()) == 5 * 4 * 3 + 5
    for _ in range(50):
        n = int(torch.randint(1, 20, (1,), generator=g))
        q.push(torch.randn(n, 3, generator=g), torch.randint(0, 5, (n,), generator=g))
    assert {k: (v.shape, v.data_ptr()) for k, v in q.state_dict().items()} == before
    z, y = q.contents()
    assert z.shape == (20, 3) and y.shape == (20,)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(20))


def test_push_detaches() -> None:
    q = ClassQueue(2, 2, 2)
    z = torch.tensor([A], requires_grad=True)
    q.push(z, torch.tensor([0]))
    assert not q.contents()[0].requires_grad


def test_size_zero_is_disabled() -> None:
    q = ClassQueue(4, 0, 3)
    assert not q.enabled
    q.push(torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0]))
    z, y = q.contents()
    assert z.shape == (0, 3) and y.shape == (0,) and y.dtype == torch.long


def test_state_dict_round_trip() -> None:
    g = torch.Generator().manual_seed(1)
    q = ClassQueue(3, 3, 2)
    for _ in range(4):
        q.push(torch.randn(4, 2, generator=g), torch.randint(0, 3, (4,), generator=g))
    r = ClassQueue(3, 3, 2)
    r.load_state_dict(q.state_dict())
    for a, b in zip(q.contents(), r.contents(), strict=True):
        assert torch.equal(a, b)
    z, y = torch.randn(5, 2, generator=g), torch.randint(0, 3, (5,), generator=g)
    q.push(z, y)
    r.push(z, y)
    for a, b in zip(q.contents(), r.contents(), strict=True):
        assert torch.equal(a, b)


def test_padded_view_marks_empty_slots_and_holds_the_same_entries() -> None:
    q = ClassQueue(num_classes=3, size=4, dim=2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    q.push(z, torch.tensor([0, 0, 1, 0, 0, 0]))  # class 0 wraps: 5 entries into 4 slots
    bank, labels = q.padded()
    assert bank.shape == (12, 2) and labels.tolist() == [0, 0, 0, 0, 1, -1, -1, -1, -1, -1, -1, -1]
    valid, valid_labels = q.contents()
    # the same multiset of (entry, class) as contents(), just in slot order
    keep = labels >= 0
    got = sorted(zip(map(tuple, bank[keep].tolist()), labels[keep].tolist(), strict=True))
    want = sorted(zip(map(tuple, valid.tolist()), valid_labels.tolist(), strict=True))
    assert got == want


def reference_push(
    bank: torch.Tensor, pushed: list[int], z: torch.Tensor, labels: list[int]
) -> None:
    """The FIFO written the plain way: one sample at a time, in batch order."""
    k = bank.shape[1]
    for row, c in zip(torch.nn.functional.normalize(z, dim=1), labels, strict=True):
        bank[c, pushed[c] % k] = row
        pushed[c] += 1


def test_push_equals_a_per_sample_loop_with_wraparound() -> None:
    g = torch.Generator().manual_seed(3)
    c, k, d = 5, 4, 3
    q = ClassQueue(c, k, d)
    bank, pushed = torch.zeros(c, k, d), [0] * c
    for n in (3, 11, 1, 17, 9, 26):
        labels = torch.randint(0, c, (n,), generator=g)
        if n > k:
            labels[torch.randperm(n, generator=g)[: k + 2]] = 2  # class 2 overfills: K + 2 at once
        z = torch.randn(n, d, generator=g)
        q.push(z, labels)
        reference_push(bank, pushed, z, labels.tolist())
        assert torch.equal(q.bank, bank)
        assert q.pushed.tolist() == pushed
    assert max(pushed) > 2 * k  # every slot of some class was overwritten more than once
