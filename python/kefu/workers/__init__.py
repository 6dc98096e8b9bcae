"""Worker processes (`kefu serve --workers N`): one control process, N gateway workers, rings between.

The supervisor process is also the *control* process: it owns the one durable writer (SQLite's file
lock is never contended), the hub's conversation state, the router, presence and the HTTP API. N
*gateway workers* hold the WebSockets on the shared port (SO_REUSEPORT). Workers write to control
through one multi-producer ring (`ingress`); control writes to each worker through its own ring
(`delivery`). Both are `kefu.compiled.ShmRing` (native/shmring) in memfds the supervisor creates and
the workers inherit. docs/architecture.md ("Worker processes") explains the topology and its numbers.
"""
