<?php
error_log("procd-test warning line\nwith a second line \x1b[31m");
echo "ok\n";
