"""Adapters to third-party libraries: the container engine (the docker SDK) and the manifest
store (SQLModel). Nothing else imports either library."""
