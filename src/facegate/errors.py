"""Every failure facegate reports, as a specific exception with a stable code.

The CLI maps these to exit codes and the service to RFC 9457 problem types, so the
``code`` attribute is part of the public contract: never rename one.
"""

from __future__ import annotations


class FacegateError(Exception):
    """Base class. ``code`` is a stable machine-readable identifier."""

    code = "facegate_error"
    http_status = 400

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, **self.details}


# --- input / decode -------------------------------------------------------------------------


class InvalidInputError(FacegateError, TypeError):
    """The argument is not something facegate can read as an image."""

    code = "invalid_input"


class ImageNotFoundError(FacegateError, FileNotFoundError):
    code = "image_not_found"
    http_status = 404


class ImageDecodeError(FacegateError, ValueError):
    """Base for bytes that do not decode to a usable image."""

    code = "decode_error"
    http_status = 422


class NotAnImageError(ImageDecodeError):
    code = "not_an_image"


class UnsupportedFormatError(ImageDecodeError):
    code = "unsupported_format"
    http_status = 415


class TruncatedImageError(ImageDecodeError):
    code = "truncated"


class ImageTooLargeError(ImageDecodeError):
    code = "too_large"
    http_status = 413


class DecodeMemoryError(ImageTooLargeError):
    """Decoding the image would take more memory than allowed (many bytes per pixel: float or
    32-bit samples, CMYK, alpha), although its pixel count is within the limit."""

    code = "decode_too_large"


class ImageTooSmallError(ImageDecodeError):
    code = "too_small"


# --- faces ----------------------------------------------------------------------------------


class FaceError(FacegateError, ValueError):
    code = "face_error"
    http_status = 422


class NoFaceError(FaceError):
    code = "no_face"


class AmbiguousFaceError(FaceError):
    """No face is clearly the subject (two comparable faces, or a group); facegate will not guess.

    ``details["candidates"]``: every face as ``{"face": index, "box", "landmarks", "score"}``
    (plain lists); pass the chosen ``face`` index (or its box) back to choose it.
    """

    code = "ambiguous_face"


class FaceChoiceError(FaceError):
    """An explicit face choice does not name a detected face."""

    code = "face_choice_invalid"


class FaceIndexError(FaceChoiceError):
    code = "face_index_out_of_range"


class FaceBoxNotFoundError(FaceChoiceError):
    """No detected face overlaps the given box; ``details["candidates"]`` lists the faces."""

    code = "face_box_not_found"


class TooManyFacesError(FaceError):
    code = "too_many_faces"


# --- models ---------------------------------------------------------------------------------


class ModelError(FacegateError, RuntimeError):
    code = "model_error"
    http_status = 500


class UnknownModelError(ModelError, KeyError):
    code = "unknown_model"
    http_status = 400

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class ModelFileMissingError(ModelError):
    code = "model_missing"


class ModelIntegrityError(ModelError):
    code = "model_integrity"


class LicenseNotAcceptedError(ModelError):
    code = "license_not_accepted"
    http_status = 403


class CalibrationError(FacegateError, ValueError):
    code = "calibration_error"
