"""data_prep.decode: every source kind decodes to the right frames, bad files to a reason."""

import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from data_prep import decode
from data_prep.decode import ClipError

sys.path.insert(0, str(Path(__file__).parent / "data"))
import synth_clips  # generated fixtures, see tests/data/synth_clips.py


@pytest.fixture(scope="module")
def rgb():
    frames, _, _ = synth_clips.lus_clip(12, overlays=True, seed=1)
    return frames


def _reason(path, **kwargs) -> str:
    with pytest.raises(ClipError) as e:
        decode.decode(path, **kwargs)
    return e.value.reason


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mov", ".mkv", ".gif"])
def test_video_decodes_all_frames_with_times(tmp_path, rgb, ext):
    path = synth_clips.write_video(tmp_path / f"clip{ext}", rgb, fps=10)
    d = decode.decode(path)
    assert d.frames.shape == (12, 160, 240) and d.frames.dtype == np.uint8
    np.testing.assert_array_equal(d.frame_idx, np.arange(12))
    np.testing.assert_allclose(d.timestamp, np.arange(12) / 10, atol=1e-3)
    assert d.fps == pytest.approx(10)
    # Gray is the raw luma: GIF keeps full range; the YUV encoders store
    # limited range (16..235), which decoding keeps as is (no stretching).
    want = decode._luma(rgb).astype(float)
    if ext != ".gif":
        want = 16 + want * 219 / 255
    err = np.abs(d.frames - want).mean()
    assert err < (1 if ext == ".gif" else 6), err


def test_gif_gray_is_exact_luma(tmp_path, rgb):
    path = synth_clips.write_video(tmp_path / "clip.gif", rgb)
    first = next(decode.iter_frames(path, color_every=1))
    assert first.color.shape == (160, 240, 3)
    np.testing.assert_array_equal(first.gray, decode._luma(first.color))


def test_stride_fps_and_cap_select_frames(tmp_path, rgb):
    path = synth_clips.write_video(tmp_path / "clip.mp4", rgb, fps=10)
    assert list(decode.decode(path, stride=3).frame_idx) == [0, 3, 6, 9]
    by_fps = decode.decode(path, fps=5)
    assert list(by_fps.frame_idx) == [0, 2, 4, 6, 8, 10]
    np.testing.assert_allclose(by_fps.timestamp, [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-3)
    assert list(decode.decode(path, fps=50).frame_idx) == list(range(12))  # never upsamples
    assert list(decode.decode(path, stride=2, max_frames=3).frame_idx) == [0, 2, 4]
    with pytest.raises(ValueError):
        decode.decode(path, stride=2, fps=5)


def test_color_every_attaches_rgb_to_some_frames(tmp_path, rgb):
    path = synth_clips.write_video(tmp_path / "clip.mp4", rgb)
    frames = list(decode.iter_frames(path, color_every=4))
    assert [f.color is not None for f in frames] == [i % 4 == 0 for i in range(12)]


def test_frame_folder_natural_order_and_fps(tmp_path, rgb):
    folder = synth_clips.write_frames(tmp_path / "seq", rgb)  # f0 .. f11: f2 < f10
    d = decode.decode(folder, default_fps=5)
    np.testing.assert_array_equal(d.frames, decode._luma(rgb))  # PNG is lossless
    np.testing.assert_allclose(d.timestamp, np.arange(12) / 5)
    assert decode.clip_info(folder).n_frames_hint == 12
    (folder / "f3.png").write_bytes(b"not a png")
    assert "unreadable frame f3.png" in _reason(folder)


@pytest.mark.parametrize("photometric", ["RGB", "MONOCHROME2", "MONOCHROME1"])
def test_dicom_multiframe(tmp_path, rgb, photometric):
    pytest.importorskip("pydicom")
    path = synth_clips.write_dicom(tmp_path / "cine.dcm", rgb, fps=20, photometric=photometric)
    d = decode.decode(path)
    want = decode._luma(rgb) if photometric == "RGB" else rgb[..., 0]
    np.testing.assert_array_equal(d.frames, want)  # MONOCHROME1 is inverted back
    assert d.fps == 20
    np.testing.assert_allclose(d.timestamp, np.arange(12) / 20)
    # Files without an extension are recognised by the DICM preamble.
    bare = tmp_path / "IM0001"
    bare.write_bytes(path.read_bytes())
    assert decode.kind_of(bare) == "dicom"


def test_dicom_without_pydicom_says_so(tmp_path, rgb, monkeypatch):
    pytest.importorskip("pydicom")
    path = synth_clips.write_dicom(tmp_path / "cine.dcm", rgb[:2])
    monkeypatch.setitem(sys.modules, "pydicom", None)
    assert "pydicom" in _reason(path)


def test_bad_dicoms(tmp_path, rgb):
    pytest.importorskip("pydicom")
    from pydicom import dcmread

    path = synth_clips.write_dicom(tmp_path / "cine.dcm", rgb)
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "cut.dcm").startswith("truncated DICOM")
    ds = dcmread(path)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    assert _reason(tmp_path / "nopix.dcm") == "DICOM file has no pixel data"
    (tmp_path / "junk.dcm").write_bytes(b"x" * 300)
    assert _reason(tmp_path / "junk.dcm").startswith("corrupt or truncated DICOM")


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".avi", ".mkv", ".gif"])
def test_truncated_files_are_reported_as_truncated(tmp_path, rgb, ext):
    data = synth_clips.write_video(tmp_path / f"full{ext}", rgb).read_bytes()
    for frac in (0.3, 0.9):
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(data[: int(len(data) * frac)])
        assert "truncated" in _reason(cut)


def test_faststart_mp4_cut_short_is_truncated(tmp_path, rgb):
    # moov first: FFmpeg opens it, but the 'mdat' box runs past the end.
    import av

    src = synth_clips.write_video(tmp_path / "a.mp4", rgb)
    dst = tmp_path / "fast.mp4"
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = dst.read_bytes()
    assert data[4:8] == b"ftyp" and b"moov" in data[: len(data) // 2]
    dst.write_bytes(data[: int(len(data) * 0.7)])
    assert "truncated" in _reason(dst)


def test_empty_corrupt_unsupported_missing_and_audio_only(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(tmp_path / "empty.mp4") == "empty file"
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    assert _reason(tmp_path / "junk.mp4").startswith("corrupt or unsupported data")
    (tmp_path / "notes.xyz").write_bytes(b"hello")
    assert _reason(tmp_path / "notes.xyz").startswith("unsupported format")
    assert _reason(tmp_path / "missing.mp4") == "file not found"
    with wave.open(str(tmp_path / "sound.avi"), "wb") as w:  # a WAV named .avi
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    assert _reason(tmp_path / "sound.avi") == "no video stream"


def test_video_with_zero_frames(tmp_path):
    import av

    path = tmp_path / "zero.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # header and index, no frames
    assert path.stat().st_size > 0
    assert _reason(path) == "no frames decoded"


def test_natural_key():
    names = ["f10.png", "f2.png", "F1.png", "f02b.png"]
    assert sorted(names, key=decode.natural_key) == ["F1.png", "f2.png", "f02b.png", "f10.png"]
