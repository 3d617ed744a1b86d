"""WebSocket serving: endpoints, per-connection task trees with bounded send queues, the hub."""
