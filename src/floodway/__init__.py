"""floodway: push large volumes of work through rate-limited APIs without losing, repeating or
stalling any of it.

    from floodway import App, Retry

    app = App()                       # FLOODWAY_DATABASE_URL, else sqlite:///floodway.db

    @app.task(retry=Retry(attempts=6, backoff="exponential", initial="1s", max="60s"))
    async def send_email(to: str) -> dict: ...

    handle = app.enqueue(send_email, {"to": "ada@example.com"})
    print(handle.result(timeout=60))
"""

from .app import App, Queue, Task
from .context import Context
from .cost import Cost, graphql_cost
from .errors import (
    ConfigError,
    EnqueueError,
    Fail,
    FloodwayError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    LeaseLost,
    RateLimited,
    SchemaTooNewError,
    StoreError,
    TransitionError,
)
from .handle import Handle
from .jobs import Event, Job, Status
from .limits import LimitSpec, Rate, concurrency_for
from .retry import Retry
from .shaping import Batch
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
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
