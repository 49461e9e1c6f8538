"""A workspace: the settings plus the catalog, object store and index folder they point at.

Everything that reads or writes project state goes through one :class:`Workspace`; adapters are
opened lazily so that a command that only needs the catalog never touches S3.
"""
from __future__ import annotations

import os
import uuid
from functools import cached_property
from pathlib import Path

import yaml

from medq.settings import CONFIG_FILE, Settings, load_settings
from medq.storage.catalog import Catalog


class Workspace:
    def __init__(self, settings: Settings | None = None, *, read_only: bool = False):
        self.settings = settings or load_settings()
        self.read_only = read_only

    @property
    def root(self) -> Path:
        return self.settings.workspace

    @classmethod
    def init(cls, settings: Settings | None = None) -> "Workspace":
        """Create the workspace folders, a commented `medq.yaml` (if missing) and the catalog."""
        ws = cls(settings)
        ws.root.mkdir(parents=True, exist_ok=True)
        config = ws.root / CONFIG_FILE
        if not config.exists():
            config.write_text(
                "# MedQ workspace settings; every key can also be set as MEDQ_<AREA>__<KEY>.\n"
                "# Example: switch the object store to MinIO/S3\n"
                "# objects:\n#   backend: s3\n#   s3_endpoint: minio.example.org:9000\n"
                "#   s3_bucket: medq\n" + yaml.safe_dump({"model": {"backend": ws.settings.model.backend}}))
        if ws.settings.objects.backend == "local":
            ws.settings.objects_root.mkdir(parents=True, exist_ok=True)
        ws.settings.index_root.mkdir(parents=True, exist_ok=True)
        ws.catalog  # noqa: B018 - the property creates and migrates the catalog
        ws.id  # noqa: B018 - the property writes the id once; part of every Prefect cache key
        return ws

    @property
    def id(self) -> str:
        """A random id written at creation: a new workspace at the same path gets a new id, so
        Prefect caches of a deleted workspace can never be reused."""
        path = self.root / "workspace.id"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(uuid.uuid4().hex)
            os.replace(tmp, path)
        return path.read_text().strip()

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog.open(self.settings.catalog_path, read_only=self.read_only,
                            lock_timeout_s=self.settings.catalog.lock_timeout_s)

    @cached_property
    def objects(self):
        """The configured :class:`medq.storage.objects.ObjectStore`."""
        from medq.storage.objects import create_object_store
        return create_object_store(self.settings)

    def scratch(self, name: str) -> Path:
        """A workspace-local scratch folder (created)."""
        path = self.root / "tmp" / name
        path.mkdir(parents=True, exist_ok=True)
        return path
