"""The lowest layer: collectives with deadlines, every use of Horovod's private API, and the
compiled extension's loader."""
