"""gRPC plugins: the host side arrives with the plugins issue; the contract is proto/kefu/plugin/v1."""
