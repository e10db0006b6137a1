"""Scenario models for Azure Virtual Desktop: host pools, their session hosts and user load.

:mod:`emulator.scenario` picks up :class:`HostPoolSpec` from here for ``host_pools`` (see the
hook there). Only names defined in ``emulator.scenario`` above that hook are imported. Every
field has a default that gives a small, quiet pool; YAML example::

    host_pools:
      - name: hp-finance
        resource_group: rg-avd
        location: westeurope
        max_session_limit: 8
        load_balancer_type: BreadthFirst
        registration_token_hours: 24
        hosts:
          - name_prefix: avd-fin
            count: 3
            image_reference: "MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:latest"
        user_profile:
          users: 20
          logon_start_hour: 7.5
          logon_end_hour: 18
          mean_session_minutes: 240
          disconnect_probability: 0.1
          message_logoff_fraction: 0.6
          message_reaction_minutes: 10
          days: 1
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from emulator.scenario import HostPoolSpec as _BaseHostPool
from emulator.scenario import HostSpec as _BaseHost
from emulator.scenario import UserProfile as _BaseProfile

__all__ = ["AvdHostSpec", "HostPoolSpec", "UserLoadProfile"]

LOAD_BALANCERS = {
    "breadthfirst": "BreadthFirst",
    "depthfirst": "DepthFirst",
    "persistent": "Persistent",
}


class AvdHostSpec(_BaseHost):
    """``count`` session hosts named ``<name_prefix>-<i>``, registered and running at start.

    ``image_reference``: a marketplace URN (``publisher:offer:sku:version``), a gallery image
    or version id, or an ARM ``imageReference`` object; None: the scenario's first marketplace
    image. ``power``: ``running`` or ``deallocated``; ``allow_new_session: false`` seeds them
    drained.
    """

    security_type: Literal["TrustedLaunch", "Standard"] | None = "TrustedLaunch"
    power: Literal["running", "deallocated"] = "running"
    allow_new_session: bool = True
    start_index: int = Field(default=0, ge=0)


class UserLoadProfile(_BaseProfile):
    """Simulated users of one host pool (all times UTC hours of the day, host time).

    Each user logs on once a day at a uniformly drawn time in [logon_start_hour,
    logon_end_hour) and stays for an exponentially distributed time (mean
    ``mean_session_minutes``, at least ``min_session_minutes``, never past logon_end_hour +
    ``overtime_hours`` nor midnight). With ``disconnect_probability`` a user disconnects
    part-way and stays disconnected until the disconnected-session limit logs them off. After a
    message ("please save your work"), ``message_logoff_fraction`` of the active users log off
    by themselves within ``message_reaction_minutes``. A user logged off by force (or whose host
    shut down) tries again after ``reconnect_minutes``; a logon that finds no host with a free
    slot is retried after ``retry_minutes`` (with the pool's ``start_vm_on_connect`` the user
    first starts a stopped host and waits up to ``retry_minutes`` for it). ``days`` bounds the
    simulation (then users stop: the clock is not kept busy); ``enabled: false`` turns the users
    off. A stopped host is noticed the instant its VM stops (no polling), so the former
    ``heartbeat_minutes`` is accepted and ignored.
    """

    enabled: bool = True
    days: int = Field(default=1, ge=0, le=366)
    min_session_minutes: float = Field(default=5, gt=0)
    overtime_hours: float = Field(default=8, ge=0, le=24)
    message_logoff_fraction: float = Field(default=0.5, ge=0, le=1)
    message_reaction_minutes: float = Field(default=10, gt=0)
    reconnect_minutes: float = Field(default=5, gt=0)
    retry_minutes: float = Field(default=10, gt=0)
    upn_domain: str = Field(default="contoso.com", min_length=1)
    netbios_domain: str = Field(default="CONTOSO", min_length=1)

    @model_validator(mode="after")
    def _window(self) -> UserLoadProfile:
        if self.logon_end_hour <= self.logon_start_hour:
            raise ValueError("logon_end_hour must be later than logon_start_hour")
        return self


class HostPoolSpec(_BaseHostPool):
    """An AVD host pool the scenario starts with (extends the framework's model)."""

    preferred_app_group_type: Literal["Desktop", "RailApplications", "None"] = "Desktop"
    personal_desktop_assignment_type: Literal["Automatic", "Direct"] = "Automatic"
    start_vm_on_connect: bool = False
    friendly_name: str | None = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    # A registration token issued at start, valid this many hours (1..720); None: no token.
    registration_token_hours: float | None = Field(default=None, ge=1, le=720)
    # Appended to session host names (e.g. "contoso.local" -> "avd-0.contoso.local").
    domain_suffix: str | None = None
    hosts: list[AvdHostSpec] = Field(default_factory=list)  # type: ignore[assignment]
    user_profile: UserLoadProfile | None = None

    @model_validator(mode="before")
    @classmethod
    def _lb(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("load_balancer_type"), str):
            key = data["load_balancer_type"].lower()
            if key in LOAD_BALANCERS:
                data = {**data, "load_balancer_type": LOAD_BALANCERS[key]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> HostPoolSpec:
        if self.load_balancer_type not in LOAD_BALANCERS.values():
            raise ValueError(
                "load_balancer_type must be BreadthFirst, DepthFirst or Persistent, got "
                f"{self.load_balancer_type!r}"
            )
        if self.host_pool_type == "Personal" and self.load_balancer_type != "Persistent":
            raise ValueError("a Personal host pool needs load_balancer_type Persistent")
        if self.host_pool_type == "Pooled" and self.load_balancer_type == "Persistent":
            raise ValueError(
                "a Pooled host pool needs load_balancer_type BreadthFirst or DepthFirst"
            )
        return self
