<?php
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
echo "visits=", $_SESSION['n'], " id=", session_id(), "\n";
