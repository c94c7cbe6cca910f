"""Ground grid geometry against the analytic scene of ground_scene.py (ray-cast masks, hand-projected cells).

The scene: a road |y| <= 3 m (sidewalk beyond it, then terrain), and one car-labelled box
x 6..7 m, |y| <= 1 m, as tall as the camera is high (so nothing is seen over it).
"""

import math

import numpy as np
import pytest
from ground_scene import (
    BOX,
    CAR,
    GRID,
    HEIGHT_M,
    PITCH,
    REACH,
    RES,
    ROAD,
    ROLES,
    SIZE,
    SKY,
    F,
    assert_matches,
    expected_grid,
    grid_for,
    k_matrix,
    optical_axes,
    ray_cast,
)

from seg_node.ground.geometry import (
    GeometryError,
    GridSpec,
    build_lookup,
    check_intrinsics,
    honest_range,
    pose_from_mount,
    pose_from_quaternion,
)
from seg_node.ground.grid import camera_grid, column_contacts, fuse_grids, grid_picture, resolve_roles
from seg_node.ground.mapper import GroundConfig, GroundGridMapper
from seg_node.ground.score import GridScores
from seg_node.model.classes import CITYSCAPES_CLASSES
from seg_node.ros.parameters import PARAMETERS, SettingsError, settings_from_values


def test_front_camera_over_road_and_box_matches_the_ray_cast_scene():
    mask = ray_cast(SIZE, F, F, 319.5, 239.5, PITCH, 0.0)
    actual, lookup = grid_for(mask, k_matrix(F, 319.5, 239.5), SIZE, PITCH, 0.0)
    assert lookup.max_range == pytest.approx(REACH)
    expected = expected_grid(SIZE, F, F, 319.5, 239.5, PITCH, 0.0, REACH)
    assert_matches(actual, expected)
    # Only the box's ground contact is 100: cells on its front edge, none elsewhere.
    rows, cols = np.nonzero(actual == 100)
    xs, ys = (cols + 0.5) * RES, -8.0 + (rows + 0.5) * RES
    assert len(xs) >= 8
    assert np.all(np.abs(xs - BOX[0]) <= RES) and np.all(np.abs(ys) <= BOX[3] + RES)
    # Behind the box (x 6.4 .. 12 m, |y| < 0.6) everything is unknown: never free, never an obstacle.
    behind = (np.arange(GRID.width)[None, :] + 0.5) * RES
    across = -8.0 + (np.arange(GRID.height)[:, None] + 0.5) * RES
    hidden = (behind > BOX[0] + 2 * RES) & (behind < 12.0) & (np.abs(across) < 0.6)
    assert np.all(actual[hidden] == -1)
    # Beyond the honest range nothing is claimed.
    far = np.hypot(behind, across) > REACH
    assert np.all(actual[far] == -1)


def test_max_range_parameter_limits_the_grid():
    mask = ray_cast(SIZE, F, F, 319.5, 239.5, PITCH, 0.0, box=False)
    actual, lookup = grid_for(mask, k_matrix(F, 319.5, 239.5), SIZE, PITCH, 0.0, max_range=5.0)
    assert lookup.max_range == 5.0
    assert_matches(actual, expected_grid(SIZE, F, F, 319.5, 239.5, PITCH, 0.0, 5.0, box=False))
    x = (np.arange(GRID.width)[None, :] + 0.5) * RES
    y = -8.0 + (np.arange(GRID.height)[:, None] + 0.5) * RES
    assert np.all(actual[np.hypot(x, y) > 5.0] == -1)
    assert np.any(actual[np.hypot(x, y) < 4.8] == 0)


def test_honest_range_is_the_least_of_the_three_limits():
    assert honest_range(0.1, 1.5, 1000.0, math.radians(1.0), 50.0) == pytest.approx(math.sqrt(0.15 / math.radians(1)))
    assert honest_range(0.1, 1.5, 1000.0, 0.0, 50.0) == pytest.approx(math.sqrt(150.0))
    assert honest_range(0.1, 1.5, 1000.0, 0.0, 5.0) == 5.0


def test_pitch_zero_row_is_h_f_over_v_minus_cy_and_nothing_above_the_horizon():
    cy = 239.5
    pose = pose_from_mount((0.0, 0.0, HEIGHT_M, 0.0, 0.0, 0.0))
    lookup = build_lookup(GRID, pose, k_matrix(F, 319.5, cy), SIZE, max_range=100.0)
    seen = lookup.seen
    x = GRID.origin_x + (seen % GRID.width + 0.5) * RES
    y = GRID.origin_y + (seen // GRID.width + 0.5) * RES
    on_axis = np.abs(y) < RES
    # d = h f / (v - c_y)  <=>  v = c_y + h f / d, rounded to the nearest row.
    assert np.array_equal(lookup.row[on_axis], np.floor(cy + HEIGHT_M * F / x[on_axis] + 0.5))
    assert lookup.row.min() > cy  # every ground point is below the horizon
    # An all-"road" mask (sky painted as road, too): only cells in view and range are filled.
    grid = camera_grid(np.full(SIZE, ROAD, np.uint8), lookup, ROLES)
    expected = expected_grid(SIZE, F, F, 319.5, cy, 0.0, 0.0, 100.0, box=False) >= -1
    assert (grid == 0).sum() == lookup.seen.size
    assert expected.all()
    assert lookup.seen.size == (x > HEIGHT_M * F / (SIZE[0] - 0.5 - cy)).sum()


def test_half_resolution_mask_with_its_rescaled_intrinsics_gives_the_same_grid():
    k = k_matrix(F, 319.5, 239.5)
    full = ray_cast(SIZE, F, F, 319.5, 239.5, PITCH, 0.0)
    # Half-resolution pixel centres sit at full-resolution (2c + 0.5, 2r + 0.5).
    half = ray_cast((240, 320), F / 2, F / 2, (319.5 - 0.5) / 2, (239.5 - 0.5) / 2, PITCH, 0.0)
    grid_full, _ = grid_for(full, k, SIZE, PITCH, 0.0)
    grid_half, lookup = grid_for(half, k, SIZE, PITCH, 0.0)
    expected = expected_grid(SIZE, F, F, 319.5, 239.5, PITCH, 0.0, math.sqrt(RES * HEIGHT_M * F / 2))
    assert lookup.max_range == pytest.approx(math.sqrt(RES * HEIGHT_M * F / 2))  # rows twice as coarse
    assert_matches(grid_half, expected)
    agree = grid_full[grid_half != -1] == grid_half[grid_half != -1]
    assert agree.mean() > 0.97
    # A mask upsampled from the half one by nearest neighbour (what mask_resolution=input publishes)
    # gives exactly the grid of the half mask, cell for cell, within the shared range.
    upsampled = np.repeat(np.repeat(half, 2, 0), 2, 1)
    grid_up, _ = grid_for(upsampled, k, SIZE, PITCH, 0.0, max_range=lookup.max_range)
    assert np.array_equal(grid_up, grid_half)


def test_non_centred_principal_point_is_honoured():
    cx, cy = 250.0, 300.0
    mask = ray_cast(SIZE, F, F, cx, cy, PITCH, 0.0)
    actual, _ = grid_for(mask, k_matrix(F, cx, cy), SIZE, PITCH, 0.0)
    assert_matches(actual, expected_grid(SIZE, F, F, cx, cy, PITCH, 0.0, REACH))
    # The same mask read as if the principal point were centred puts cells elsewhere.
    wrong, _ = grid_for(mask, k_matrix(F, 319.5, 239.5), SIZE, PITCH, 0.0)
    assert (wrong != actual).sum() > 50


def test_yaw_of_a_side_camera_rotates_the_footprint():
    yaw = math.radians(60)  # looking forward-left
    mask = ray_cast(SIZE, F, F, 319.5, 239.5, PITCH, yaw, cam=(1.0, 0.5), box=False)
    actual, _ = grid_for(mask, k_matrix(F, 319.5, 239.5), SIZE, PITCH, yaw, cam=(1.0, 0.5))
    expected = expected_grid(SIZE, F, F, 319.5, 239.5, PITCH, yaw, REACH, cam=(1.0, 0.5), box=False)
    assert_matches(actual, expected)
    rows, _cols = np.nonzero(actual == 0)
    ys = -8.0 + (rows + 0.5) * RES
    assert ys.mean() > 1.0  # the free cells lie to the left of the vehicle


def test_pose_from_quaternion_agrees_with_the_mount_angles():
    # A camera pitched down 10 degrees: body rotation about y by 10 degrees, then the optical rotation.
    mount = pose_from_mount((0.5, 0.0, 1.5, 0.0, PITCH, 0.0))
    q = _quaternion(mount.rotation)
    assert np.allclose(pose_from_quaternion((0.5, 0.0, 1.5), q).rotation, mount.rotation)
    assert np.allclose(mount.rotation, optical_axes(PITCH, 0.0))


def _quaternion(r):
    w = math.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    return ((r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w), w)


def test_raised_object_is_not_smeared_onto_the_ground():
    # A car standing on the road, with road seen over its roof: one contact band, and nothing
    # in its columns above the contact is claimed (neither its body nor the road seen past it).
    mask = np.full(SIZE, ROAD, np.uint8)
    mask[:250] = SKY
    mask[300:350, 250:390] = CAR  # its bottom edge at row 349, road below it and above it
    pose = pose_from_mount((0.0, 0.0, HEIGHT_M, 0.0, PITCH, 0.0))
    lookup = build_lookup(GRID, pose, k_matrix(F, 319.5, 239.5), SIZE, max_range=100.0)
    grid = camera_grid(mask, lookup, ROLES).ravel()
    seen = lookup.seen
    row, col = lookup.row, lookup.column
    in_car_columns = (col >= 250) & (col < 390)
    assert np.all(grid[seen][in_car_columns & (row < 340)] == -1)  # the car's body and what it hides
    assert np.any(grid[seen][~in_car_columns & (row < 300)] == 0)  # road beside it, as far
    assert np.all(grid[seen][in_car_columns & (row > 351)] == 0)  # the road in front of it
    occupied = grid[seen] == 100
    assert occupied.any() and np.all(in_car_columns[occupied])
    assert np.all((lookup.top[occupied] <= 349.5) & (lookup.bottom[occupied] > 349.5))


def test_fusion_prefers_obstacles_then_drivable():
    a = np.array([[-1, 0, 100, -1]], np.int8)
    b = np.array([[0, 100, 0, -1]], np.int8)
    assert fuse_grids([a, b]).tolist() == [[0, 100, 100, -1]]


def test_bad_intrinsics_and_roles_are_refused_with_one_sentence():
    assert 'uncalibrated' in check_intrinsics(np.zeros(9))
    assert 'distortion' in check_intrinsics(k_matrix(F, 1, 1), np.array([0.1, 0, 0, 0, 0]))
    assert check_intrinsics(k_matrix(F, 1, 1), np.zeros(5)) is None
    with pytest.raises(GeometryError, match="'lane'"):
        resolve_roles(CITYSCAPES_CLASSES, drivable=['lane'])
    with pytest.raises(GeometryError, match="'car' is in both"):
        resolve_roles(CITYSCAPES_CLASSES, drivable=['road', 'car'])
    voc = resolve_roles(('background', 'person', 'car'))
    assert voc.drivable == () and voc.obstacle == ('person', 'car')
    with pytest.raises(GeometryError, match='resolution > 0'):
        GridSpec.from_extent(0.0, 0, 1, 0, 1)
    mapper = GroundGridMapper(GroundConfig(GRID, ROLES, 20.0, 0.0))
    with pytest.raises(GeometryError, match='above the ground'):
        mapper.lookup('c', pose_from_mount((0, 0, -0.1, 0, 0, 0)), k_matrix(F, 1, 1), SIZE, mask_size=SIZE)


def test_lookup_is_rebuilt_only_when_pose_or_intrinsics_change():
    mapper = GroundGridMapper(GroundConfig(GRID, ROLES, 20.0, 0.0))
    k = k_matrix(F, 319.5, 239.5)
    pose = pose_from_mount((0, 0, HEIGHT_M, 0, PITCH, 0))
    first = mapper.lookup('c', pose, k, SIZE, mask_size=SIZE)
    assert mapper.lookup('c', pose_from_mount((0, 0, HEIGHT_M, 0, PITCH, 0)), k.copy(), SIZE, mask_size=SIZE) is first
    assert mapper.lookups_built == 1
    mapper.lookup('c', pose_from_mount((0, 0, HEIGHT_M, 0, PITCH + 0.01, 0)), k, SIZE, mask_size=SIZE)
    mapper.lookup('c', pose_from_mount((0, 0, HEIGHT_M, 0, PITCH + 0.01, 0)), k, SIZE, mask_size=(240, 320))
    assert mapper.lookups_built == 3


def _ground_values(**changes):
    values = {spec.name: spec.default for spec in PARAMETERS} | {'model_path': 'm.onnx', 'ground_grid': True}
    return values | changes


@pytest.mark.parametrize(('changes', 'problem'), [
    ({'ground_x_max': 0.0}, 'the ground grid extent is empty'),
    ({'ground_y_min': 10.0}, 'the ground grid extent is empty'),
    ({'ground_resolution': 0.01, 'ground_x_max': 100.0, 'ground_y_min': -100.0, 'ground_y_max': 100.0},
     'raise ground_resolution'),
    ({'ground_camera_poses': [0.0, 0.0, 1.5]}, 'needs 6 values (x y z roll pitch yaw) for each of the 1'),
    ({'ground_camera_poses': [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}, 'must be above the ground'),
    ({'ground_frame': ''}, 'ground_frame must name a frame'),
    ({'ground_resolution': 0.0}, 'ground_resolution must be in [0.01, 5.0]'),
    ({'ground_pitch_sigma_deg': -1.0}, 'ground_pitch_sigma_deg must be in'),
    ({'ground_fusion_max_age_s': 20.0}, 'ground_fusion_max_age_s must be in'),
])
def test_bad_ground_parameters_are_refused_with_one_sentence(changes, problem):
    with pytest.raises(SettingsError) as err:
        settings_from_values(_ground_values(**changes))
    assert problem in str(err.value)
    assert '\n' not in str(err.value)


def test_ground_parameters_give_the_grid_and_poses():
    assert settings_from_values(_ground_values(ground_grid=False)).ground is None
    ground = settings_from_values(_ground_values(ground_camera_poses=[0.5, 0, 1.4, 0, 0.1, 0])).ground
    assert ground.poses == ((0.5, 0.0, 1.4, 0.0, 0.1, 0.0),) and ground.frame_id == 'base_footprint'
    spec = GridSpec.from_extent(ground.resolution, ground.x_min, ground.x_max, ground.y_min, ground.y_max)
    assert (spec.width, spec.height) == (200, 200)


def test_column_contacts_agree_with_a_scan_of_each_column():
    rng = np.random.default_rng(5)
    mask = np.where(rng.random((600, 40)) < 0.97, ROAD, CAR).astype(np.uint8)
    mask[:, 7] = ROAD  # a column with no obstacle
    mask[599, 9] = CAR  # an obstacle in the bottom row: no ground below it
    lowest, contact = column_contacts(mask, ROLES, 20)
    for c in range(mask.shape[1]):
        rows = [r for r in range(20, 600) if mask[r, c] == CAR]
        expected_lowest = rows[-1] if rows else -1
        assert lowest[c] == expected_lowest
        on_road = expected_lowest >= 0 and expected_lowest + 1 < 600 and mask[expected_lowest + 1, c] == ROAD
        assert contact[c] == (expected_lowest if on_road else -1)


def test_grid_scores_count_by_hand():
    truth = np.array([[0, 0, 100, -1], [0, 100, -1, -1]], np.int8)
    predicted = np.array([[0, -1, 0, 0], [0, 0, -1, 100]], np.int8)
    scores = GridScores()
    scores.add(predicted, truth)
    s = scores.summary()
    # known: 5 cells, exact: (0,0) and (1,0); claimed: 4 of them.
    assert (s['cell_accuracy'], s['coverage']) == (2 / 5, 4 / 5)
    # contact (0,2) has the predicted contact (1,3) within one cell; (1,1) has none and is called 0.
    assert (s['contact_recall'], s['false_free_rate']) == (0.5, 0.5)


def test_grid_picture_shows_forward_up_and_left_left():
    cells = np.full((2, 3), -1, np.int8)  # 2 cells along y (right to left), 3 along x (near to far)
    cells[0, 2] = 0  # far and to the right
    cells[1, 0] = 100  # near and to the left
    picture = grid_picture(cells, cell_px=1)
    assert picture.shape == (3, 2, 3)
    assert picture[0, 1].tolist() == [200, 200, 200] and picture[2, 0].tolist() == [220, 30, 30]
