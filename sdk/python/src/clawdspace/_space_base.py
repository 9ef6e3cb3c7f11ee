"""Read-only attributes shared by `Space` and `AsyncSpace`."""

from __future__ import annotations

from typing import List, Optional

from .models import SpaceInfo


class SpaceAttrs:
    """The space's record as last fetched (`refresh()` fetches it again)."""

    info: SpaceInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> str:
        """`running`, `paused` or `stopped` (when last fetched)."""
        return self.info.status

    @property
    def image(self) -> str:
        return self.info.image

    @property
    def memory(self) -> int:
        """Memory limit, bytes."""
        return self.info.memory

    @property
    def cpus(self) -> float:
        return self.info.cpus

    @property
    def network(self) -> str:
        return self.info.network

    @property
    def gpus(self) -> List[str]:
        return self.info.gpus

    @property
    def ip_address(self) -> Optional[str]:
        return self.info.ip_address

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.name} {self.info.status}>"
