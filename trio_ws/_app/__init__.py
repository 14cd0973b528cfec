"""What applications build on connections: hubs and rooms, pools, reconnecting,
metrics."""
