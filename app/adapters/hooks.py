"""Private methods under public names, at no cost per call; green threads kept for reuse."""

from __future__ import annotations


class Hooked:
    """A base for adapter classes. An adapter lists in `HOOKS` ({private: public}) the
    library methods it names: the public name is the library's method (what `super()`
    reaches from an override), and in every subclass the private name is pointed at
    whatever the subclass resolves the public name to, so the library's own calls run
    the most derived override with no call in between."""

    HOOKS: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "HOOKS" in cls.__dict__:  # the adapter itself: the library's, by default
            for private, public in cls.HOOKS.items():
                if public not in cls.__dict__:
                    setattr(cls, public, getattr(cls, private))
        for private, public in cls.HOOKS.items():
            setattr(cls, private, getattr(cls, public))


class Runners:
    """Green threads that run one function after another, kept parked between them (at
    most `keep`): starting a green thread costs a greenlet and, since Python 3.11, a
    frame stack the kernel maps and unmaps, about 8 µs a time (docs/performance.md),
    and a busy worker starts one per read. Each function runs in a fresh context, as
    in a new green thread; one that raises ends its green thread, as a new one's would.
    The async library's adapter gives `spawn(fn, arg)` (a new green thread), `resume(
    green, value)` (switch to a parked one from the event loop) and `park()` (wait for
    that switch, returning its value)."""

    __slots__ = ("_park", "_resume", "_spawn", "idle", "keep")

    def __init__(self, keep: int, spawn, resume, park) -> None:
        self.idle: list = []
        self.keep = keep
        self._spawn, self._resume, self._park = spawn, resume, park

    def start(self, function) -> None:
        if self.idle:
            self._resume(self.idle.pop(), function)
        else:
            self._spawn(self._serve, function)

    def _serve(self, function) -> None:
        from contextvars import Context

        from greenlet import getcurrent

        current = getcurrent()
        while True:
            Context().run(function)
            function = None  # (held while parked otherwise)
            if len(self.idle) >= self.keep:
                return
            self.idle.append(current)
            function = self._park()
