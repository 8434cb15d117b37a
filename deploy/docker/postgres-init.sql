-- The collector keeps its watermarks and command ids in a database of its own.
CREATE DATABASE collector;
