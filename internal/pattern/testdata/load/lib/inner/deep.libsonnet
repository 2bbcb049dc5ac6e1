{
  check: 'test -f /etc/motd',
  bytes: importbin '../blob.bin',
}
