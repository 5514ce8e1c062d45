"""cascade.decode.row: each row's random stream and its plan for a step."""

import pytest
import torch

from cascade.decode.row import plan_rows, stream_seed
from cascade.errors import PluginError
from cascade.schedules.base import DraftPlan, ScheduleSettings
from cascade.schedules.builtin import Constant, ConstantOptions


def test_each_prompt_gets_its_own_stream_from_the_seed():
    a, b = torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4])
    assert stream_seed(0, a) == stream_seed(0, a.clone())  # the same prompt and seed: the same stream, alone or not
    assert len({stream_seed(0, a), stream_seed(0, b), stream_seed(1, a)}) == 3
    assert 0 <= stream_seed(2**40, a) < 2**63


class _Row:
    def __init__(self, schedule, remaining):
        self.schedule, self.remaining = schedule, remaining


class _Shared:
    name, shared = "shared-test", True

    def __init__(self, rows_planned):
        self.rows_planned = rows_planned

    def plan(self, limit):
        raise AssertionError("a schedule that plans for a batch is asked once per step")

    def plan_batch(self, limits):
        return [DraftPlan(limit) for limit in limits][: self.rows_planned]


def test_plans_come_from_each_row_or_once_from_a_shared_schedule():
    own = [_Row(Constant(ScheduleSettings(ConstantOptions(block_size=3))), r) for r in (10, 2)]
    assert [p.k for p in plan_rows(own)] == [3, 1]  # k accepted + 1 bonus within each row's budget
    shared = _Shared(2)
    assert [p.k for p in plan_rows([_Row(shared, 5), _Row(shared, 9)])] == [4, 8]
    with pytest.raises(PluginError, match="planned 1 rows for a batch of 2"):
        plan_rows([_Row(_Shared(1), 5), _Row(_Shared(1), 5)][:1] * 2)
