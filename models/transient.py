"""Tensors a module derives and keeps outside its parameters and buffers, and why they never
outlive a move or a pickle.

Some modules keep tensors in plain attributes: a cache of derived values (an unpacked mask, a
folded weight, the keys an attention layer selects for a task) or what one forward leaves for
the next step (a prompt pool's choice for the batch, an auxiliary loss). ``nn.Module.to`` does
not move plain attributes, and pickling (a run's ``resume.pt``, ``copy.deepcopy``) would carry
them on the device they were made on, so a run resumed on a GPU would mix devices. A module
that lists such attributes in ``transient`` (each with a class-level default) drops them —
they fall back to the default and are derived again on next use — whenever it is moved or cast
(``_apply``: ``to``, ``cuda``, ``half``, ...), and never pickles them.
"""

from __future__ import annotations


class TransientState:
    """Mixin for ``nn.Module`` subclasses (before the module class in the bases): the names in
    ``transient`` are dropped on every ``_apply`` and left out of the pickled state."""

    transient: tuple[str, ...] = ()

    def drop_transient(self) -> None:
        for name in self.transient:
            self.__dict__.pop(name, None)

    def _apply(self, fn, recurse: bool = True):
        self.drop_transient()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for name in self.transient:
            state.pop(name, None)
        return state
