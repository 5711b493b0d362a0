"""The community's registry: devices, residents, staff and buildings. Every stage reads it."""

from registry.models import Building, Device, Registry, Resident, Shift, Staff

__all__ = ["Building", "Device", "Registry", "Resident", "Shift", "Staff"]
