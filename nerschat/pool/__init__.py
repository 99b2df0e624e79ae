"""Pools: keep N replicas ready past any one walltime (hand-over, replacement, elasticity)."""

from nerschat.pool.accounting import Usage, usage
from nerschat.pool.backend import LaunchBackend, PoolSpec
from nerschat.pool.controller import Pool, PoolError, Timing
from nerschat.pool.state import Handover, Member, PoolState

__all__ = ["Handover", "LaunchBackend", "Member", "Pool", "PoolError", "PoolSpec", "PoolState",
           "Timing", "Usage", "usage"]
