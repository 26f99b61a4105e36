"""Property-based round trips of write_image/read_image over random arrays, types and geometries."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from asymseg.io import Geometry, read_image, read_label, write_image


@st.composite
def rotations(draw) -> tuple[float, ...]:
    """An oblique direction matrix: a rotation from a random unit quaternion, maybe with one axis flipped."""
    q = np.array(draw(st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 4)), dtype=np.float64)
    norm = np.linalg.norm(q)
    if norm < 1e-3:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    w, x, y, z = q / norm
    matrix = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    flip = draw(st.sampled_from([None, 0, 1, 2]))
    if flip is not None:
        matrix[:, flip] *= -1.0
    return tuple(matrix.ravel())


@st.composite
def volumes(draw):
    shape = draw(st.tuples(*[st.integers(1, 6)] * 3))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.int32]))
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=np.dtype(dtype).itemsize * 8)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    array = draw(arrays(dtype, shape, elements=elements))
    spacing = draw(st.tuples(*[st.floats(0.05, 20.0)] * 3))
    origin = draw(st.tuples(*[st.floats(-500.0, 500.0)] * 3))
    geometry = Geometry((shape[2], shape[1], shape[0]), spacing, origin, draw(rotations()))
    return array, geometry


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volume=volumes(), ext=st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"]))
def test_write_then_read_gives_back_values_and_geometry(volume, ext):
    array, geometry = volume
    with tempfile.TemporaryDirectory() as folder:
        path = write_image(array, geometry, Path(folder) / f"v{ext}")
        back, back_geometry = read_image(path)
        assert [p.name for p in Path(folder).iterdir()] == [f"v{ext}"]
        if array.dtype.kind in "iu":
            labels, _ = read_label(path)
            np.testing.assert_array_equal(labels, array)
    np.testing.assert_array_equal(back, array.astype(np.float32))
    assert back_geometry.size == geometry.size
    if ext in (".nrrd", ".mha"):
        assert geometry.differences(back_geometry, tol=1e-9) == []
    else:  # NIfTI keeps spacing, origin and the rotation (as a quaternion) in float32
        assert geometry.differences(back_geometry, tol=1e-5) == []


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 300)] * 3), spacing=st.tuples(*[st.floats(0.01, 50.0)] * 3),
       origin=st.tuples(*[st.floats(-1e4, 1e4)] * 3), direction=rotations())
def test_geometry_dict_round_trip_and_axis_order(shape, spacing, origin, direction):
    geometry = Geometry((shape[2], shape[1], shape[0]), spacing, origin, direction)
    assert Geometry.from_dict(geometry.to_dict()) == geometry
    assert geometry.shape_zyx == shape
    assert geometry.differences(geometry) == []
    assert np.isclose(geometry.voxel_volume_ml, np.prod(spacing) / 1000.0, rtol=1e-12)
