"""Shaping work before it spends a quota: the options of a dedupe window and of a debounce,
checked where they are declared (``@app.task``) or passed (``app.enqueue``), and the key each
enqueue is matched on. The matching itself is a store rule (``store.rules.match_enqueue_key``)
applied in the enqueue's transaction, so it holds across processes and machines."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from . import jsontext
from .errors import ConfigError, EnqueueError
from .inputs import MAX_AHEAD_SECONDS
from .jobs import EnqueueKey
from .limits import resolve_key, template_fields
from .units import parse_duration

#: the option names of a dedupe window and a debounce, as ``@app.task`` and ``enqueue`` take them
KEY_OPTIONS = ("unique_for", "unique_key", "unique_while", "debounce", "debounce_key", "debounce_max")
#: the values ``unique_while`` takes
UNIQUE_WHILE = ("active",)


@dataclass(frozen=True)
class KeyPolicy:
    """A task's (or one enqueue's) dedupe or debounce: ``kind`` is ``"unique"`` or
    ``"debounce"``; ``template`` makes the key from the job's arguments and tenant (None: a
    dedupe key is the whole of the arguments, a debounce key the task itself)."""

    kind: str
    template: str | None
    window: float = 0.0
    while_unfinished: bool = False
    max_wait: float | None = None

    def key_for(self, args: Mapping[str, Any], tenant: str | None, args_json: str) -> EnqueueKey:
        """The key of one enqueue. A tenant's keys never meet another tenant's: a dedupe must
        not hand one tenant the handle of another's job."""
        if self.template is not None:
            try:
                value = resolve_key(self.template, args, tenant)
            except ConfigError as exc:
                option = "unique_key" if self.kind == "unique" else "debounce_key"
                raise EnqueueError(f"{option} {exc}") from None
        elif self.kind == "unique":
            # the same arguments in any order are the same call
            canonical = args_json if len(args) < 2 else jsontext.dumps(dict(sorted(args.items())))
            value = "args:" + hashlib.sha256(canonical.encode()).hexdigest()
        else:
            value = ""
        # a key without a tenant starts with the separator, which no tenant name holds: no
        # argument value can make one equal to a tenant's key
        scoped = f"{tenant or ''}\x1f{value}"
        return EnqueueKey(self.kind, scoped, self.window, self.while_unfinished, self.max_wait)


def _window(value: Any, name: str) -> float:
    """A window of a dedupe or a debounce: positive, and no longer than a run may be put off
    (ten years, as ``delay=``)."""
    seconds = parse_duration(value, name=name, allow_zero=False)
    if not seconds <= MAX_AHEAD_SECONDS:
        raise ConfigError(f"{name}: {value!r} is longer than ten years")
    return seconds


def _check_template(template: Any, option: str, where: str, signature: inspect.Signature | None) -> str:
    """A key template whose fields are arguments the task takes (or ``{tenant}``)."""
    fields = template_fields(template, where=f"{where}: {option}")
    if signature is None:
        return template
    params = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return template
    for field in fields:
        root = field.split(".")[0]
        if root not in params and root != "tenant":
            known = ", ".join(params) or "none"
            raise ConfigError(
                f"{where}: {option} {template!r} names {{{field}}}, which is not an argument of the task "
                f"(its arguments: {known}; {{tenant}} is the job's tenant)"
            )
    return template


def key_policy(options: Mapping[str, Any], where: str, signature: inspect.Signature | None = None) -> KeyPolicy | None:
    """The ``KeyPolicy`` that ``options`` (some of ``KEY_OPTIONS``) declare, or None when they
    declare none. ``ConfigError`` names what is wrong; ``signature`` (the task's, without its
    context) checks that key templates name its arguments."""
    given = {name: value for name, value in options.items() if value is not None}
    if not given:
        return None
    unique = {n for n in given if n.startswith("unique")}
    debounce = {n for n in given if n.startswith("debounce")}
    if unique and debounce:
        raise ConfigError(f"{where}: a job is deduped (unique_*) or debounced (debounce*), not both")
    if debounce:
        if "debounce" not in given:
            raise ConfigError(f"{where}: {sorted(debounce)[0]} needs debounce= (the quiet period, e.g. '5s')")
        window = _window(given["debounce"], f"{where}: debounce")
        max_wait = None
        if "debounce_max" in given:
            max_wait = _window(given["debounce_max"], f"{where}: debounce_max")
            if max_wait < window:
                raise ConfigError(
                    f"{where}: debounce_max ({given['debounce_max']}) must be at least the debounce ({given['debounce']})"
                )
        template = given.get("debounce_key")
        if template is not None:
            template = _check_template(template, "debounce_key", where, signature)
        return KeyPolicy("debounce", template, window, max_wait=max_wait)
    while_value = given.get("unique_while")
    if while_value is not None and while_value not in UNIQUE_WHILE:
        raise ConfigError(f"{where}: unique_while must be one of {list(UNIQUE_WHILE)}, got {while_value!r}")
    if while_value is not None and "unique_for" in given:
        raise ConfigError(f"{where}: pass unique_for (a window) or unique_while='active', not both")
    if while_value is None and "unique_for" not in given:
        raise ConfigError(f"{where}: unique_key needs unique_for (a window, e.g. '10m') or unique_while='active'")
    template = given.get("unique_key")
    if template is not None:
        template = _check_template(template, "unique_key", where, signature)
    if while_value is not None:
        return KeyPolicy("unique", template, while_unfinished=True)
    return KeyPolicy("unique", template, _window(given["unique_for"], f"{where}: unique_for"))


#: how a batch is charged to the limits its task holds
BATCH_CHARGES = ("call", "item")


@dataclass(frozen=True)
class Batch:
    """Run many queued items of a task in one call: ``@app.task(batch=Batch(max_size=100,
    max_wait="2s", key="{tenant}"))`` on a function that takes a list.

    Each item is enqueued (one by one or in bulk) as a job of its own, with its own handle,
    status, retries and result. A worker takes up to ``max_size`` ready items of one key (and
    tenant: a batch never mixes tenants), waiting up to ``max_wait`` after the oldest was
    enqueued for the batch to fill, and calls the function once with their arguments. The
    task's limits are charged once per call (``charge="call"``, one bulk request) or once per
    item (``charge="item"``). The function returns one result per item (or None); it marks the
    items that failed with ``ctx.fail(index, error)``, and only those are retried, in a later
    batch.
    """

    max_size: int = 100
    max_wait: Any = 0.0
    key: str | None = None
    charge: str = "call"

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 1:
            raise ConfigError(f"Batch: max_size must be an int >= 1, got {self.max_size!r}")
        object.__setattr__(self, "max_wait", parse_duration(self.max_wait, name="Batch: max_wait"))
        if self.key is not None:
            template_fields(self.key, where="Batch: key")
        if self.charge not in BATCH_CHARGES:
            raise ConfigError(f"Batch: charge must be one of {list(BATCH_CHARGES)}, got {self.charge!r}")

    def key_for(self, task: str, args: Mapping[str, Any], tenant: str | None) -> str:
        """The batch an item waits in: its task, its tenant and the value of ``key``."""
        try:
            value = resolve_key(self.key, args, tenant) if self.key is not None else ""
        except ConfigError as exc:
            raise EnqueueError(f"batch key {exc}") from None
        return f"{task}\x1f{tenant or ''}\x1f{value}"


def check_batch_function(name: str, signature: inspect.Signature) -> None:
    """A batch task's function takes the list of items (after its context, if any): one
    parameter, annotated as a list when it is annotated at all."""
    params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if len(params) != 1 or params[0].kind is inspect.Parameter.KEYWORD_ONLY:
        raise ConfigError(
            f"task {name!r}: a batch task's function takes the list of items as its one argument "
            f"(after ctx), e.g. `async def {name}(ctx, items: list[dict])`; it takes {signature}"
        )
    annotation = params[0].annotation
    if annotation is inspect.Parameter.empty:
        return
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    origin = getattr(annotation, "__origin__", annotation)
    if not (origin in (list, tuple) or str(text).split("[")[0].strip() in ("list", "List", "Sequence", "Iterable")):
        if not (isinstance(origin, type) and origin.__name__ in ("Sequence", "Iterable")):
            raise ConfigError(
                f"task {name!r}: a batch task's function takes a list of items, but its argument "
                f"{params[0].name!r} is annotated {text}"
            )
