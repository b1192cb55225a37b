"""Every list of job statuses comes from ``floodway.jobs.Status``: the API schema, the dashboard's
templates and script take it from there, so a status added or renamed cannot be half-handled."""

from __future__ import annotations

import re
from pathlib import Path

from floodway.jobs import Status, StepStatus

WEB = Path(__file__).resolve().parents[2] / "src" / "floodway" / "web"
NAMES = [s.value for s in Status]


def test_the_api_schema_lists_the_statuses_of_the_code():
    from floodway.web import openapi

    assert openapi.STATUSES == NAMES


def test_the_dashboard_takes_its_status_sets_from_the_rules():
    from floodway.web import dashboard

    assert dashboard.STATUS_NAMES == NAMES
    assert set(dashboard.FINAL_NAMES) == {s.value for s in Status if s.is_final}
    assert set(dashboard.RETRYABLE_NAMES) == {"failed", "cancelled", "retrying"}
    assert set(dashboard.CANCELLABLE_NAMES) == {"scheduled", "waiting", "running", "retrying"}


def test_no_status_list_is_written_out_in_the_templates_or_the_script():
    quoted = "|".join(NAMES)
    # two or more quoted status names in one bracket: a list written out by hand
    hand_written = re.compile(rf"[\[(]\s*[\"']({quoted})[\"']\s*,\s*[\"']({quoted})[\"']")
    for path in [WEB / "static" / "app.js", *sorted((WEB / "templates").glob("*.html"))]:
        assert not hand_written.search(path.read_text()), path.name


def test_a_step_has_its_own_statuses():
    assert [s.value for s in StepStatus] == ["complete", "failed"]
    assert StepStatus.COMPLETE == "complete" and str(StepStatus.FAILED) == "failed"
