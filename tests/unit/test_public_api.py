"""The public surface is pinned: what ``import floodway`` offers is a decision, not an accident.
Adding a name means adding it here; everything else lives in modules a user need not import."""

from __future__ import annotations

import floodway

PUBLIC = [
    "App",
    "Batch",
    "ConfigError",
    "Context",
    "Cost",
    "EnqueueError",
    "Event",
    "Fail",
    "FloodwayError",
    "Handle",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "LeaseLost",
    "LimitSpec",
    "Queue",
    "Rate",
    "RateLimited",
    "Retry",
    "SchemaTooNewError",
    "Status",
    "StoreError",
    "Task",
    "TransitionError",
    "Worker",
    "__version__",
    "concurrency_for",
    "graphql_cost",
]


def test_the_exported_names_are_exactly_the_pinned_ones():
    assert sorted(floodway.__all__) == sorted(PUBLIC)
    assert len(set(floodway.__all__)) == len(floodway.__all__)


def test_every_exported_name_is_importable_and_public():
    for name in floodway.__all__:
        assert getattr(floodway, name) is not None
        assert name == "__version__" or not name.startswith("_")


def test_nothing_else_public_is_left_in_the_package_namespace():
    # submodules are reachable as attributes once imported; any other public name is a leak
    import types

    extra = {
        name
        for name, value in vars(floodway).items()
        if not name.startswith("_") and name not in floodway.__all__ and not isinstance(value, types.ModuleType)
    }
    assert extra == set()


def test_the_errors_share_one_base_and_the_control_signals_do_not():
    raised = {
        n
        for n in floodway.__all__
        if isinstance(getattr(floodway, n), type) and issubclass(getattr(floodway, n), BaseException)
    }
    # Fail and RateLimited are raised by a task to steer its job, not errors of floodway itself
    signals = {"Fail", "RateLimited"}
    assert {n for n in raised if issubclass(getattr(floodway, n), floodway.FloodwayError)} == raised - signals
