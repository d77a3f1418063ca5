"""Audio stage: music and ambience beds under the narration, ducked and loudness-matched."""
