"""Request throttling: ARM's per-subscription token buckets and Compute's per-VM buckets.

Figures from platform-facts (all refills in host time, so virtual time refills them too):

- ARM, per subscription: reads 250 (refill 25/s), writes 200 (10/s), deletes 200 (10/s);
- Compute, per region: VM put/update/delete 12 per VM (4/min) and 1,500 per subscription
  (500/min); single-VM GET 36 per VM (12/min) and 24,000 per subscription (8,000/min);
  async-operation GET 45 per VM (15/min) and 15,000 per subscription (5,000/min).

A refused request gets 429 with ``Retry-After`` (seconds until a token is back) and the
``x-ms-ratelimit-remaining-*`` headers; admitted ones carry the remaining counts too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from emulator.arm import ArmError


class BucketSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: float = Field(gt=0)
    refill_per_second: float = Field(gt=0)


def _per_min(capacity: float, per_minute: float) -> BucketSpec:
    return BucketSpec(capacity=capacity, refill_per_second=per_minute / 60.0)


class ThrottleSettings(BaseModel):
    """Bucket sizes; a scenario may shrink them to exercise 429 handling."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    arm_reads: BucketSpec = BucketSpec(capacity=250, refill_per_second=25)
    arm_writes: BucketSpec = BucketSpec(capacity=200, refill_per_second=10)
    arm_deletes: BucketSpec = BucketSpec(capacity=200, refill_per_second=10)
    vm_put_per_vm: BucketSpec = _per_min(12, 4)
    vm_put_per_subscription: BucketSpec = _per_min(1500, 500)
    vm_get_per_vm: BucketSpec = _per_min(36, 12)
    vm_get_per_subscription: BucketSpec = _per_min(24000, 8000)
    async_get_per_vm: BucketSpec = _per_min(45, 15)
    async_get_per_subscription: BucketSpec = _per_min(15000, 5000)


@dataclass
class _Bucket:
    spec: BucketSpec
    tokens: float
    last: datetime

    def refill(self, now: datetime) -> None:
        elapsed = max(0.0, (now - self.last).total_seconds())
        self.tokens = min(self.spec.capacity, self.tokens + elapsed * self.spec.refill_per_second)
        self.last = now

    def wait_seconds(self) -> int:
        missing = 1.0 - self.tokens
        return max(1, math.ceil(missing / self.spec.refill_per_second))


VM_TYPE = "microsoft.compute/virtualmachines"


class Throttler:
    """Token buckets keyed by subscription (and VM); thread-safe."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self.settings = ThrottleSettings()
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self.throttled = 0
        self.throttled_by_bucket: dict[str, int] = {}

    def configure(self, settings: ThrottleSettings) -> None:
        with self._lock:
            self.settings = settings
            self._buckets.clear()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self.throttled = 0
            self.throttled_by_bucket.clear()

    def _bucket(self, key: tuple[str, ...], spec: BucketSpec, now: datetime) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(spec, spec.capacity, now)
            self._buckets[key] = b
        b.refill(now)
        return b

    def admit(
        self,
        method: str,
        op: str,
        subscription: str | None,
        vm_id: str | None,
    ) -> dict[str, str]:
        """Take tokens for one request; the rate-limit headers, or raise 429.

        ``vm_id`` is the virtual machine the request concerns (its id), when it concerns one:
        Compute's per-VM buckets apply then.
        """
        s = self.settings
        if not s.enabled:
            return {}
        sub = (subscription or "-").lower()
        m = method.upper()
        opl = op.lower()
        category, arm_spec = (
            ("reads", s.arm_reads)
            if m in ("GET", "HEAD")
            else ("deletes", s.arm_deletes)
            if m == "DELETE"
            else ("writes", s.arm_writes)
        )
        # (label, key, spec, header-name)
        wanted: list[tuple[str, tuple[str, ...], BucketSpec]] = [
            (f"subscription-{category}", ("arm", sub, category), arm_spec)
        ]
        if vm_id is not None:
            vm = vm_id.lower()
            if opl in (f"{VM_TYPE}/write", f"{VM_TYPE}/delete"):
                wanted.append(("PutVMPerVM", ("putvm", vm), s.vm_put_per_vm))
                wanted.append(("PutVMPerSub", ("putvm-sub", sub), s.vm_put_per_subscription))
            elif opl == f"{VM_TYPE}/read" and m == "GET":
                wanted.append(("GetVMPerVM", ("getvm", vm), s.vm_get_per_vm))
                wanted.append(("GetVMPerSub", ("getvm-sub", sub), s.vm_get_per_subscription))
            elif opl.endswith("/operations/read") or opl.endswith("/operationresults/read"):
                wanted.append(("GetOperationPerVM", ("asyncget", vm), s.async_get_per_vm))
                wanted.append(
                    ("GetOperationPerSub", ("asyncget-sub", sub), s.async_get_per_subscription)
                )
        now = self._now()
        with self._lock:
            buckets = [(label, self._bucket(key, spec, now)) for label, key, spec in wanted]
            empty = [(label, b) for label, b in buckets if b.tokens < 1.0]
            if empty:
                self.throttled += 1
                wait = max(b.wait_seconds() for _, b in empty)
                for label, _ in empty:
                    self.throttled_by_bucket[label] = self.throttled_by_bucket.get(label, 0) + 1
                headers = self._headers(buckets, category)
                headers["Retry-After"] = str(wait)
                label = empty[0][0]
                if label.startswith("subscription-"):
                    raise ArmError(
                        429,
                        "TooManyRequests",
                        "The request is being throttled as the limit has been reached for "
                        f"operation type - {category.title()[:-1]}_ObservationWindow_00:05:00. "
                        "For more information, see - https://aka.ms/srpthrottlinglimits",
                        headers,
                    )
                raise ArmError(
                    429,
                    "OperationNotAllowed",
                    "The server rejected the request because too many requests have been "
                    "received for this subscription.",
                    headers,
                    details=[
                        {
                            "code": "TooManyRequests",
                            "target": label,
                            "message": f"Limit reached for policy {label}; "
                            f"retry after {wait} seconds.",
                        }
                    ],
                )
            for _, b in buckets:
                b.tokens -= 1.0
            return self._headers(buckets, category)

    @staticmethod
    def _headers(buckets: list[tuple[str, _Bucket]], category: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        resource_parts = []
        for label, b in buckets:
            remaining = max(0, int(b.tokens))
            if label.startswith("subscription-"):
                headers[f"x-ms-ratelimit-remaining-subscription-{category}"] = str(remaining)
            else:
                resource_parts.append(f"Microsoft.Compute/{label};{remaining}")
        if resource_parts:
            headers["x-ms-ratelimit-remaining-resource"] = ",".join(resource_parts)
        return headers
