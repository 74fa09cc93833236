"""Where the master is and how to trust it: the CLI's profile file.

The profile is JSON at ``$WASMOS_PROFILE``, or
``$XDG_CONFIG_HOME/wasmos/profile.json`` (``~/.config/wasmos/...``):
``{"master": "https://…", "ca": "-----BEGIN CERTIFICATE-----…", "token": "…"}``.
``WASMOS_MASTER``, ``WASMOS_CA`` (a PEM file) and ``WASMOS_TOKEN`` override it,
as they do for the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class Profile:
    """A master's URL, the PEM of the CA its certificate chains to, a token."""

    master: Optional[str] = None
    ca: Optional[str] = None
    token: Optional[str] = None

    @staticmethod
    def path() -> Optional[Path]:
        """Where the profile file is (it may not exist)."""
        explicit = os.environ.get("WASMOS_PROFILE")
        if explicit:
            return Path(explicit)
        config = os.environ.get("XDG_CONFIG_HOME")
        if config:
            return Path(config) / "wasmos" / "profile.json"
        home = os.environ.get("HOME")
        return Path(home) / ".config" / "wasmos" / "profile.json" if home else None

    @classmethod
    def load(cls) -> "Profile":
        """The profile file's values (empty if there is none), then the
        environment's."""
        profile = cls()
        path = cls.path()
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            profile = cls(data.get("master"), data.get("ca"), data.get("token"))
        if os.environ.get("WASMOS_MASTER"):
            profile.master = os.environ["WASMOS_MASTER"]
        if os.environ.get("WASMOS_CA"):
            profile.ca = Path(os.environ["WASMOS_CA"]).read_text()
        if os.environ.get("WASMOS_TOKEN"):
            profile.token = os.environ["WASMOS_TOKEN"].strip()
        return profile
