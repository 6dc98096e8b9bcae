"""The bench scenarios (chat, supervisor, idle, storm, coldstart, loadgen ceiling) and their targets."""
