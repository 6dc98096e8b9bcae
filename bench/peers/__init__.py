"""Peers measured beside Kefu: minimal, fair chat hubs speaking the bench room protocol."""
