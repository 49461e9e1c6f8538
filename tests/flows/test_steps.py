"""The step layer's dispatch: a step is a Prefect task (or sub-flow) inside a flow run and a
plain call everywhere else, with the same result."""
from __future__ import annotations

from prefect import flow
from prefect.context import FlowRunContext, TaskRunContext

from medq.tasks._runtime import in_flow_run, loop_flow, loop_task


@loop_task(name="test-double")
def double(x: int) -> tuple[int, bool, bool]:
    """(2x, ran as a task run, ran inside a flow run)."""
    return 2 * x, TaskRunContext.get() is not None, FlowRunContext.get() is not None


@loop_flow(name="test-twice")
def twice(x: int) -> list[tuple[int, bool, bool]]:
    return [double(x), double(x + 1)]


def test_outside_a_flow_run_a_step_is_a_plain_call():
    assert not in_flow_run()
    assert double(2) == (4, False, False)
    assert twice(1) == [(2, False, False), (4, False, False)]  # the sub-flow too
    assert double.fn(3) == (6, False, False) and double.name == "test-double"


def test_inside_a_flow_run_steps_become_tasks_and_sub_flows():
    @flow(name="test-outer")
    def outer() -> tuple:
        return double(5), twice(1), in_flow_run()

    single, nested, inside = outer()
    assert inside is True
    assert single == (10, True, True)  # a task run of the flow
    assert nested == [(2, True, True), (4, True, True)]  # tasks of the sub-flow run
