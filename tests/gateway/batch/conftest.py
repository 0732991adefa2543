from tests.gateway.jobs.conftest import forty_seconds_wav, speech_clips

__all__ = ["forty_seconds_wav", "speech_clips"]
