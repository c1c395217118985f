"""Policy improvement: rollouts with on-device rewards, the GRPO / PPO / APA losses, STaR / ReST / Guided-ReST."""
