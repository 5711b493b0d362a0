"""The community's registry: devices, residents, staff and buildings. Every stage reads it."""

from registry.loader import (
    Problem,
    RegistryError,
    check_registry,
    load_registry,
    write_registry,
)
from registry.models import Building, Device, Registry, Resident, Shift, Staff

__all__ = [
    "Building",
    "Device",
    "Problem",
    "Registry",
    "RegistryError",
    "Resident",
    "Shift",
    "Staff",
    "check_registry",
    "load_registry",
    "write_registry",
]
