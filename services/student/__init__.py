"""The student seen from the real-time path: the Triton client that batches cache misses."""

from services.student.client import InvalidStudentQuery, StudentClient, StudentUnavailable

__all__ = ["InvalidStudentQuery", "StudentClient", "StudentUnavailable"]
