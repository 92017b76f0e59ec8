"""Cloud Storage, through google-cloud-storage. The only module that imports it.

Two verbs for the Cloud Build backend: upload a source tarball once, and read a build log from
an offset. Transient answers (429, 5xx) are raised as google.api_core exceptions for the caller's
retry policy; the library's own retries are switched off so that there is exactly one policy.
"""

from __future__ import annotations

import contextlib
from typing import IO, Any

import google.api_core.exceptions as api_exceptions
from google.cloud.storage import Client

from imagecascade.errors import BackendError, ConfigError


class CloudStorage:
    def __init__(self, client: Client) -> None:
        self._client = client

    @classmethod
    def connect(cls, project: str, credentials: Any, endpoint: str | None) -> CloudStorage:
        """A client for `project`; `endpoint` (an emulator's URL) replaces storage.googleapis.com."""
        options = {"api_endpoint": endpoint} if endpoint else None
        return cls(Client(project=project, credentials=credentials, client_options=options))

    def upload_once(
        self, bucket_name: str, object_name: str, source: IO[bytes], *, create_bucket: bool
    ) -> bool:
        """Upload `source` unless the object exists; True when this call uploaded it.

        Objects are named by content hash, so an existing one already holds these bytes. A
        missing bucket is created when `create_bucket` (gcloud does the same for its default
        `<project>_cloudbuild`), else it is a ConfigError.
        """
        bucket = self._client.bucket(bucket_name)
        blob = bucket.blob(object_name)
        try:
            if blob.exists(retry=None):
                return False
        except api_exceptions.NotFound:
            pass
        try:
            blob.upload_from_file(
                source, content_type="application/gzip", if_generation_match=0, rewind=True, retry=None
            )
        except api_exceptions.PreconditionFailed:
            return False  # someone uploaded the same bytes in between
        except api_exceptions.NotFound as error:
            if not create_bucket:
                raise ConfigError(
                    f"Cloud Storage: bucket gs://{bucket_name} does not exist; create it "
                    f"(gcloud storage buckets create gs://{bucket_name}) or pass --bucket"
                ) from error
            # Conflict: created meanwhile, or the name is another project's (the upload then says).
            with contextlib.suppress(api_exceptions.Conflict):
                self._client.create_bucket(bucket_name, retry=None)
            blob.upload_from_file(
                source, content_type="application/gzip", if_generation_match=0, rewind=True, retry=None
            )
        return True

    def read_from(self, bucket_name: str, object_name: str, offset: int) -> bytes:
        """The object's bytes from `offset` on; b"" when it does not exist (yet) or has no more."""
        blob = self._client.bucket(bucket_name).blob(object_name)
        try:
            data: bytes = blob.download_as_bytes(start=offset, retry=None, checksum=None)
        except (api_exceptions.NotFound, api_exceptions.RequestRangeNotSatisfiable):
            return b""
        except api_exceptions.Forbidden as error:
            raise BackendError(
                f"Cloud Storage: not allowed to read gs://{bucket_name}/{object_name}"
            ) from error
        return data

    def close(self) -> None:
        self._client.close()
