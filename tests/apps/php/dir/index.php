<?php echo "directory index ", $_SERVER['SCRIPT_NAME'], "\n";
