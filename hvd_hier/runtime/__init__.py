"""The optimizer at run time: the factory, the per-level objects, step orchestration, the
ranks' agreement and elastic rebuild, mixed precision."""
