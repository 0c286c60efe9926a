"""Autocast helpers: run precision-critical arithmetic (sampling positions, affine fields,
Jacobians) in the inputs' own dtype whatever autocast the caller has switched on."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

__all__ = ["autocast_enabled", "without_autocast"]


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``.

    ``False`` for device types autocast does not know (e.g. ``"meta"``); ``True`` on torch
    < 2.4, which cannot say for a device type (then switching it off is the safe side).
    """
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4: is_autocast_enabled() takes no device type
        return True
    except RuntimeError:  # a device type without autocast support
        return False


def without_autocast(device_type: str) -> AbstractContextManager[object]:
    """A context with autocast off for ``device_type`` (a no-op where it is not on)."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()
