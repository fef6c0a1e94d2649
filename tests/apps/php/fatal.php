<?php
this_function_does_not_exist_procd(42);
