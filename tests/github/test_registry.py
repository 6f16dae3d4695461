"""The job names queued by constant (where the job's function cannot be imported) name registered jobs."""

from __future__ import annotations

from arq.worker import func

from bot.github import constants
from bot.github.worker.registry import FUNCTIONS


def test_each_job_name_constant_names_a_job_the_worker_runs() -> None:
    registered = {func(function).name for function in FUNCTIONS}
    names = {key: value for key, value in vars(constants).items() if key.endswith("_JOB")}
    assert len(names) == 5
    assert {key: value for key, value in names.items() if value not in registered} == {}
