"""resolve_device: one clear ValueError for a name torch does not know or a device this machine lacks."""

import pytest
import torch

from hilovit.device import is_out_of_memory, resolve_device


def test_known_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected and resolve_device(None) == expected


@pytest.mark.parametrize("name, message", [
    ("gpu", "device='gpu' is not a device name; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (an NVIDIA GPU"),
    ("cuda:x", "device='cuda:x' is not a device name"),
    ("", "device='' is not a device name"),
    ("meta", "device='meta' is not supported"),
    ("cuda:99", "device='cuda:99' is not available"),
])
def test_unknown_or_missing_devices(name, message):
    with pytest.raises(ValueError) as err:
        resolve_device(name)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda():
    with pytest.raises(ValueError, match=r"device='cuda' is not available: .*use 'cpu' or 'auto'"):
        resolve_device("cuda")


def test_not_a_name():
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(3)


def test_train_refuses_a_bad_device_before_writing(tmp_path):
    from hilovit.train import train

    with pytest.raises(ValueError, match="device='gpu' is not a device name"):
        train(device="gpu", output=str(tmp_path / "run"), data=str(tmp_path / "nodata"))
    assert not (tmp_path / "run").exists()


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    with pytest.raises(RuntimeError) as err:
        torch.empty(2**62, dtype=torch.uint8)  # no machine has 4 EiB
    assert is_out_of_memory(err.value), str(err.value)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
