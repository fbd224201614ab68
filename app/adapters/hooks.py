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
    in a new green thread (`threading.local` values, green-thread-local under the
    async libraries, do carry over: the template's own reset theirs before use); one
    that raises ends its green thread, as a new one's would.

    Only `start` may wake a parked green thread, with its own token: anything else
    that reaches it (a forgotten timeout, a close thrown at an old wait) ends it or
    parks it again, and a function whose green thread ended meanwhile gets a new one,
    so no function is ever lost. The async library's adapter gives `spawn(fn, arg)`
    (a new green thread), `call_soon(fn, *args)` (from the event loop, soon) and
    `park()` (wait for a switch, returning its value)."""

    __slots__ = ("_call_soon", "_park", "_spawn", "idle", "keep")

    def __init__(self, keep: int, spawn, call_soon, park) -> None:
        self.idle: list = []
        self.keep = keep
        self._spawn, self._call_soon, self._park = spawn, call_soon, park

    def start(self, function) -> None:
        while self.idle:
            green = self.idle.pop()
            if not green.dead:
                self._call_soon(self._wake, green, function)
                return
        self._spawn(self._serve, function)

    def _wake(self, green, function) -> None:
        from greenlet import getcurrent

        # (run by the event loop, whose green thread is the parent of those it runs: a
        # parked one of another OS thread's loop, as tests run, cannot be switched to)
        if not green.dead and green.parent is getcurrent():
            green.switch((_WAKE, function))
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
            while function is None:
                try:
                    woken = self._park()
                except BaseException:
                    if current in self.idle:
                        self.idle.remove(current)
                    raise
                if type(woken) is tuple and woken[0] is _WAKE:
                    function = woken[1]


_WAKE = object()  # what `Runners.start` wakes a parked green thread with
