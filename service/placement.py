"""Where a new room goes: the least-loaded node that still takes rooms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from service.directory import NodeStats


def takes_rooms(node: NodeStats, rooms_held: int) -> bool:
    """Ready, under its CPU threshold (when it has one) and under its room limit."""
    if node.state != "ready" or rooms_held >= node.max_rooms:
        return False
    return node.max_cpu_percent is None or node.cpu_percent < node.max_cpu_percent


def choose_node(nodes: Sequence[NodeStats], rooms_held: Mapping[str, int]) -> NodeStats | None:
    """The node for a new room, or None when none takes rooms (the cluster is full).

    Least loaded first by participants (each costs about the same CPU, and the count moves at
    once, where a CPU figure lags the burst of joins that a busy minute brings), then by rooms
    held (an empty room will fill), then by measured CPU."""
    open_nodes = [n for n in nodes if takes_rooms(n, rooms_held.get(n.node_id, 0))]
    if not open_nodes:
        return None
    return min(
        open_nodes,
        key=lambda n: (n.participants, rooms_held.get(n.node_id, 0), n.cpu_percent, n.node_id),
    )
