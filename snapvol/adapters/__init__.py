"""Adapters to third-party software: the container engine (the docker SDK), the manifest store
(SQLModel) and restic (the program). Nothing else imports either library or runs restic."""
