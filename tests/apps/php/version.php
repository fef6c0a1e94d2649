<?php
require __DIR__ . '/version.inc';
echo "version ", PROCD_VERSION, " pid ", getmypid(), "\n";
