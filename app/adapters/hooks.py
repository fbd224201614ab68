"""Private methods under public names, at no cost per call."""

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
