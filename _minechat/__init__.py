"""The minechat clients' machinery: private, for read_client.py and send_client.py only."""
